"""Whole-pipeline runs: a daily run and a 30-day backfill, each one Dagster run, with uploads.

Each configuration runs in a fresh subprocess (its own Dagster instance, its own lake, a local
fake CloudZero over real HTTP) against one PostgreSQL LiteLLM database loaded once. Besides the
Dagster run, the same hours go through the same library calls without Dagster (extract into
the lake, build line items, send each hour to the fake), so the report can say how much of the
run is our work and how much is Dagster's own bookkeeping (events, per-partition metadata).

    python -m bench.pipeline --hours 24 --rows-per-hour 2000
    python -m bench.pipeline --hours 720 --rows-per-hour 200 \\
        --instances sqlite,postgres,postgres-batched
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from cz_pipeline.lib.hours import HOUR, HourWindow, partition_key
from cz_pipeline.lib.synthetic import write_to_postgres

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent
FIRST_HOUR = datetime(2026, 9, 1, tzinfo=UTC)
INSTANCES = ("sqlite", "postgres", "postgres-batched")
# Appended to an instance kind: Dagster plans a range run with one event per asset instead of
# one per asset and hour (it then shows no hour of a running or failed run as in progress or
# failed); see README, "Large backfills".
PLANNED_SUBSET = "+planned-subset"
API_KEY = "bench-cloudzero-key"
CONNECTION = "bench-connection"


def _create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name


def _drop_database(name: str) -> None:
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _instance_home(kind: str, root: Path) -> tuple[Path, dict[str, str], str | None]:
    """A DAGSTER_HOME for ``kind``; PostgreSQL kinds use the repository's dagster.yaml."""
    home = root / "dagster_home"
    home.mkdir()
    env: dict[str, str] = {}
    if kind.endswith(PLANNED_SUBSET):
        kind = kind.removesuffix(PLANNED_SUBSET)
        env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "1"
    database = None
    if kind == "sqlite":
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    else:
        database = _create_database("cz_bench_dagster")
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        env |= {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": "5432",
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": database,
        }
        if kind == "postgres-batched":
            env["DAGSTER_EVENT_BATCH_SIZE"] = "100"
    return home, env, database


def _child(window: HourWindow, litellm_url: str, lake: Path) -> dict[str, Any]:
    """Runs inside the subprocess: the Dagster run, then the same work without Dagster."""
    import dagster as dg

    from cz_pipeline.definitions import defs
    from cz_pipeline.defs.resources import CloudZeroResource, LakeResource, SpendLogSourceResource
    from cz_pipeline.lib.cbf import DEFAULT_GRAIN, build_line_items
    from cz_pipeline.lib.cloudzero import CloudZeroClient
    from cz_pipeline.lib.lake import Lake
    from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource
    from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, extract_to_lake
    from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero

    hours = list(window.hours())
    with FakeCloudZero(API_KEY, CONNECTION) as fake:
        cloudzero = CloudZeroResource(api_url=fake.url, api_key=API_KEY, connection_id=CONNECTION)
        job = defs().resolve_job_def("litellm_to_cloudzero")
        instance = dg.DagsterInstance.get()
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": partition_key(hours[0]),
                "dagster/asset_partition_range_end": partition_key(hours[-1]),
            },
            resources={
                "spend_log_source": SpendLogSourceResource(
                    kind="postgres", database_url=litellm_url
                ),
                "lake": LakeResource(url=str(lake / "dagster")),
                "cloudzero": cloudzero,
            },
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            raise_on_error=False,
        )
        dagster_seconds = time.perf_counter() - started
        runs = len(instance.get_runs())
        uploads_in_run = len(fake.posts())
        steps = _step_seconds(instance, result.run_id)

        # The same work without Dagster: what the assets do, minus the bookkeeping.
        started = time.perf_counter()
        plain = Lake(str(lake / "plain"))
        extraction = LiteLLMPostgresSource(litellm_url).extract(window)
        extract_to_lake(extraction, window, plain, source="postgres")
        extracted = time.perf_counter()
        line_items = {}
        for hour in hours:
            items = build_line_items(plain.read_hour(SPEND_LOGS_DATASET, hour), DEFAULT_GRAIN)
            plain.write_hour("cloudzero_line_items", hour, items)
            line_items[hour] = items
        built = time.perf_counter()
        with CloudZeroClient(fake.url, API_KEY, CONNECTION) as client:
            for hour in hours:
                client.send_hour(hour, line_items[hour])
        work_seconds = time.perf_counter() - started
    return {
        "step_seconds": steps,
        "work_stage_seconds": {
            "extract": extracted - started,
            "line_items": built - extracted,
            "upload": work_seconds - (built - started),
        },
        "success": result.success,
        "runs": runs,
        "hours": len(hours),
        "uploads_in_run": uploads_in_run,
        "dagster_run_seconds": dagster_seconds,
        "work_without_dagster_seconds": work_seconds,
        "bookkeeping_seconds": max(0.0, dagster_seconds - work_seconds),
    }


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Each step's wall time in the run, from its STEP_START and STEP_SUCCESS events."""
    import dagster as dg

    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = entry.timestamp - started[event.step_key]
    return seconds


def measure(kind: str, window: HourWindow, litellm_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cz-bench-pipeline-") as scratch:
        root = Path(scratch)
        home, env, database = _instance_home(kind, root)
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("CZ_", "DAGSTER_"))}
        child_env |= env | {"DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
        try:
            completed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.pipeline",
                    "child",
                    partition_key(window.start),
                    partition_key(window.end - HOUR),
                    litellm_url,
                    str(root / "lake"),
                ],
                env=child_env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            if database:
                _drop_database(database)
    if completed.returncode != 0:
        raise RuntimeError(f"{kind}: the child failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"instance": kind, **result}


def run(hours: int, rows_per_hour: int, instances: list[str]) -> list[dict[str, Any]]:
    window = HourWindow(FIRST_HOUR, FIRST_HOUR + hours * HOUR)
    database = _create_database("cz_bench_litellm")
    try:
        load_started = time.perf_counter()
        written = write_to_postgres(_url(database), window, rows_per_hour, seed=4)
        print(
            f"loaded {written.rows_written:,} rows over {hours} hours in "
            f"{time.perf_counter() - load_started:.0f} s",
            file=sys.stderr,
        )
        results = []
        for kind in instances:
            result = measure(kind, window, _url(database)) | {"rows": written.rows_written}
            print(json.dumps(result), file=sys.stderr)
            results.append(result)
        return results
    finally:
        _drop_database(database)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| hours | rows | instance | runs | Dagster run (s) | our work alone (s) | "
        "everything else (s) | share of the run |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        share = r["bookkeeping_seconds"] / r["dagster_run_seconds"]
        lines.append(
            f"| {r['hours']} | {r['rows']:,} | {r['instance']} | {r['runs']} | "
            f"{r['dagster_run_seconds']:.1f} | {r['work_without_dagster_seconds']:.1f} | "
            f"{r['bookkeeping_seconds']:.1f} | {share:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "child":
        first, last, litellm_url, lake = args[1:5]
        window = HourWindow.from_partition_keys(first, last)
        print(json.dumps(_child(window, litellm_url, Path(lake))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--rows-per-hour", type=int, default=2000)
    parser.add_argument("--instances", default="sqlite,postgres-batched")
    options = parser.parse_args(args)
    kinds = [k.strip() for k in options.instances.split(",")]
    unknown = sorted({k.removesuffix(PLANNED_SUBSET) for k in kinds} - set(INSTANCES))
    if unknown:
        parser.error(
            f"unknown instances {unknown}; choose from {', '.join(INSTANCES)}, each optionally "
            f"followed by {PLANNED_SUBSET}"
        )
    print(table(run(options.hours, options.rows_per_hour, kinds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
