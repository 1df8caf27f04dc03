"""A 30-day backfill as one run versus daily runs in parallel, on one PostgreSQL.

Both shapes run in one invocation, against the same LiteLLM database (loaded once), each with a
fresh Dagster instance on PostgreSQL (the repository's ``dagster.yaml``,
``DAGSTER_EVENT_BATCH_SIZE=100``), a fresh lake and a fake CloudZero over real HTTP:

* **one run**: the whole range in one run (``CZ_BACKFILL_HOURS_PER_RUN`` unset);
* **daily runs**: one run per UTC day, ``--parallel`` of them at a time, as the run queue runs
  a ``CZ_BACKFILL_HOURS_PER_RUN=24`` backfill with ``max_concurrent_runs`` = ``--parallel``.

Each run is a process of its own (what the run launcher starts), with in-process steps. Besides
wall time the report gives the CPU seconds of the runs' processes, the time PostgreSQL spent
executing statements in the two databases, and the upload steps' total time (one at a time,
the ``cloudzero_api`` pool): what a projection to more cores needs, on a machine too shared
for its wall times to say it.

    python -m bench.parallel_runs --days 30 --rows-per-hour 200 --parallel 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2

from bench.pipeline import ADMIN_URL, FIRST_HOUR, REPO, _create_database, _drop_database, _url
from cz_pipeline.lib.cloudzero import hour_text
from cz_pipeline.lib.hours import HourWindow, partition_key
from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero
from cz_pipeline_tests.instance_timeline import step_intervals

API_KEY = "bench-cloudzero-key"
CONNECTION = "bench-connection"


def database_active_seconds(databases: list[str]) -> float:
    """Time PostgreSQL spent executing statements in these databases (``pg_stat_database``).

    Counted per database, so the other work on a shared server is left out. Backends report at
    the end of a transaction (at most once a second) and when they exit.
    """
    time.sleep(1.5)  # let the last backends report
    connection = psycopg2.connect(ADMIN_URL)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(active_time), 0) FROM pg_stat_database"
                " WHERE datname = ANY(%s)",
                (databases,),
            )
            row = cursor.fetchone()
    finally:
        connection.close()
    return float(row[0] if row else 0) / 1000


@dataclass(frozen=True)
class Shape:
    name: str
    runs: int
    parallel: int
    wall_s: float
    run_cpu_s: float
    database_s: float
    upload_steps_s: float
    uploads: int
    all_succeeded: bool
    cloudzero_equals_litellm: bool
    overlapping_requests: int


def _child(first: str, last: str) -> dict[str, Any]:
    """One run, in this process, on the instance and settings of the environment."""
    import dagster as dg

    from cz_pipeline.definitions import defs

    job = defs().resolve_job_def("litellm_to_cloudzero")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )
    return {"success": result.success}


def _ranges(window: HourWindow, hours_per_run: int) -> list[tuple[str, str]]:
    hours = list(window.hours())
    return [
        (partition_key(chunk[0]), partition_key(chunk[-1]))
        for chunk in (hours[i : i + hours_per_run] for i in range(0, len(hours), hours_per_run))
    ]


def measure(
    name: str, window: HourWindow, hours_per_run: int, parallel: int, litellm_url: str
) -> Shape:
    """Run ``window`` in runs of ``hours_per_run`` hours, ``parallel`` at a time."""
    instance_db = _create_database("cz_bench_dagster")
    litellm_db = litellm_url.rsplit("/", 1)[1]
    scratch = Path(tempfile.mkdtemp(prefix="cz-bench-parallel-"))
    try:
        home = scratch / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        with FakeCloudZero(API_KEY, CONNECTION) as fake:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CZ_", "DAGSTER_"))}
            env |= {
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": "5432",
                "DAGSTER_PG_USER": "postgres",
                "DAGSTER_PG_PASSWORD": "",
                "DAGSTER_PG_DB": instance_db,
                "DAGSTER_EVENT_BATCH_SIZE": "100",
                "CZ_SOURCE": "postgres",
                "LITELLM_DATABASE_URL": litellm_url,
                "CZ_LAKE_URL": str(scratch / "lake"),
                "CLOUDZERO_API_URL": fake.url,
                "CLOUDZERO_API_KEY": API_KEY,
                "CLOUDZERO_CONNECTION_ID": CONNECTION,
                "PYTHONPATH": str(REPO),
            }

            def one_run(key_range: tuple[str, str]) -> bool:
                completed = subprocess.run(
                    [sys.executable, "-m", "bench.parallel_runs", "child", *key_range],
                    env=env,
                    cwd=scratch,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if completed.returncode != 0:
                    raise RuntimeError(f"{key_range}: {completed.stderr[-3000:]}")
                return bool(json.loads(completed.stdout.strip().splitlines()[-1])["success"])

            ranges = _ranges(window, hours_per_run)
            databases = [instance_db, litellm_db]
            active_before = database_active_seconds(databases)
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            with ThreadPoolExecutor(parallel) as pool:
                succeeded = list(pool.map(one_run, ranges))
            wall = time.perf_counter() - started
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            active = database_active_seconds(databases) - active_before
            expected = LiteLLMPostgresSource(litellm_url).hourly_totals(window)
            litellm = {hour_text(h): t.spend for h, t in expected.items()}
            sent = fake.hour_costs()
            differing = sorted(
                h for h in litellm.keys() | sent.keys() if litellm.get(h) != sent.get(h)
            )
            if differing:
                print(f"{name}: CloudZero differs from LiteLLM at {differing}", file=sys.stderr)
            return Shape(
                name=name,
                runs=len(ranges),
                parallel=parallel,
                wall_s=wall,
                run_cpu_s=(cpu_after.ru_utime - cpu_before.ru_utime)
                + (cpu_after.ru_stime - cpu_before.ru_stime),
                database_s=active,
                upload_steps_s=sum(i.seconds for i in step_intervals(_url(instance_db))),
                uploads=len(fake.posts()),
                all_succeeded=all(succeeded),
                cloudzero_equals_litellm=not differing,
                overlapping_requests=fake.concurrency_violations,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _drop_database(instance_db)


def one_run_floor_s(shape: Shape) -> float:
    """A run is one chain of steps: on an idle machine it takes its CPU plus its database time."""
    return shape.run_cpu_s + shape.database_s


def projected_bounds(daily: Shape, runs_at_once: int, database_cores: int) -> dict[str, float]:
    """What bounds the daily runs on an idle deployment: a core per run, a bigger database.

    Each run is still one chain (CPU, then waiting for the database), and ``runs_at_once``
    chains overlap; the database serves at most its cores at once; the upload steps stay one at
    a time (as measured here, so this bound is pessimistic on a loaded machine). The slowest
    of the three bounds the backfill.
    """
    at_once = min(runs_at_once, daily.runs)
    return {
        "runs": one_run_floor_s(daily) / at_once,
        "database": daily.database_s / min(database_cores, at_once),
        "uploads": daily.upload_steps_s,
    }


def table(shapes: list[Shape]) -> str:
    one = shapes[0]
    lines = [
        "| shape | runs | at once | wall (s) | vs one run | run CPU (s) | database busy (s) "
        "| upload steps (s) | uploads | overlapping uploads | CloudZero = LiteLLM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in shapes:
        lines.append(
            f"| {s.name} | {s.runs} | {s.parallel} | {s.wall_s:.1f} | "
            f"{s.wall_s / one.wall_s:.2f} | {s.run_cpu_s:.1f} | {s.database_s:.1f} | "
            f"{s.upload_steps_s:.1f} | {s.uploads} | {s.overlapping_requests} | "
            f"{'yes' if s.cloudzero_equals_litellm and s.all_succeeded else 'NO'} |"
        )
    return "\n".join(lines)


def projection(shapes: list[Shape], runs_at_once: list[int], cores: list[int]) -> str:
    one, daily = shapes[0], shapes[-1]
    floor = one_run_floor_s(one)
    lines = [
        f"One run on an idle machine: {floor:.1f} s (its CPU plus its database time).",
        "",
        "| runs at once | database cores | run chains (s) | database (s) | uploads one at a time"
        " (s) | without the upload bound: vs one run | with it: vs one run |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in runs_at_once:
        for c in cores:
            bounds = projected_bounds(daily, k, c)
            unbounded = max(bounds["runs"], bounds["database"])
            lines.append(
                f"| {k} | {c} | {bounds['runs']:.1f} | {bounds['database']:.1f} | "
                f"{bounds['uploads']:.1f} | {unbounded / floor:.2f} | "
                f"{max(bounds.values()) / floor:.2f} |"
            )
    return "\n".join(lines)


def run(days: int, rows_per_hour: int, parallel: int) -> list[Shape]:
    window = HourWindow(FIRST_HOUR, FIRST_HOUR + timedelta(days=days))
    database = _create_database("cz_bench_litellm")
    try:
        written = write_to_postgres(_url(database), window, rows_per_hour, seed=4)
        print(f"loaded {written.rows_written:,} rows over {days} days", file=sys.stderr)
        shapes = []
        for name, hours, at_once in (
            ("one run", days * 24, 1),
            (f"daily runs, {parallel} at a time", 24, parallel),
        ):
            shape = measure(name, window, hours, at_once, _url(database))
            print(json.dumps(asdict(shape)), file=sys.stderr)
            shapes.append(shape)
        return shapes
    finally:
        _drop_database(database)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "child":
        print(json.dumps(_child(args[1], args[2])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.parallel_runs", description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-hour", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4, help="daily runs at a time")
    options = parser.parse_args(args)
    shapes = run(options.days, options.rows_per_hour, options.parallel)
    print(table(shapes))
    print()
    print(projection(shapes, runs_at_once=[options.parallel, 8, 16], cores=[2, 4, 8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
