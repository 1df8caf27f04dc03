"""``cz-pipeline``: run the pipeline end to end without Dagster's UI.

``cz-pipeline demo`` materializes the last few days, one run per day, on whatever the
environment configures; with nothing configured that is synthetic LiteLLM traffic, a local lake
and a local SQLite Dagster instance in ``.dagster_home/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

LOCAL_INSTANCE_YAML = """\
# Local Dagster instance for the demo and `make ui`: SQLite under this folder.
# Production uses the PostgreSQL instance in the repository's dagster.yaml; see the README.
telemetry:
  enabled: false
# No first-visit "Join the Dagster community" dialog over the demo's first page.
nux:
  enabled: false
concurrency:
  pools:
    default_limit: 1
# With `dagster dev`, a run whose worker died is marked failed and the slots it held are freed.
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 60
"""
# Written by the demo, read by `make ui`: the UI's partitions begin where the demo's data does.
DEMO_ENV_FILE = "demo.env"


@dataclass
class DayResult:
    day: str
    hours: int
    requests: int
    spend: float
    seconds: float
    success: bool


def prepare_local_instance(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)
    os.environ.setdefault("DAGSTER_HOME", str(home.resolve()))


def start_partitions_at_demo_data(home: Path, days: int, now: datetime) -> str:
    """Hourly partitions from the demo's first day, for its runs and for `make ui`.

    Production keeps ``CZ_PARTITIONS_START``; the demo fills only its last few days, and a UI
    whose partitions begin in 2025 would show every asset as almost empty.
    """
    first_day = now.astimezone(UTC).date() - timedelta(days=days)
    start = f"{first_day:%Y-%m-%d}-00:00"
    os.environ["CZ_PARTITIONS_START"] = start
    (home / DEMO_ENV_FILE).write_text(f"CZ_PARTITIONS_START={start}\n")
    return start


def _number(metadata: Mapping[str, Any], key: str) -> float:
    value = metadata[key].value
    return float(value) if isinstance(value, int | float) else 0.0


def run_days(days: int, now: datetime) -> list[DayResult]:
    import dagster as dg

    from cz_pipeline.definitions import defs

    job = defs().resolve_job_def("litellm_to_cloudzero")
    instance = dg.DagsterInstance.get()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    results = []
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        started = time.monotonic()
        print(f"  {day:%Y-%m-%d}: materializing 24 hours ...", end="", flush=True)
        run = job.execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": f"{day:%Y-%m-%d}-00:00",
                "dagster/asset_partition_range_end": f"{day:%Y-%m-%d}-23:00",
            },
            run_config=quiet,
            raise_on_error=False,
        )
        events = [
            event
            for event in run.get_asset_materialization_events()
            if event.asset_key is not None and event.asset_key.path == ["litellm_spend_logs"]
        ]
        requests = sum(
            int(_number(e.materialization.metadata, "dagster/row_count")) for e in events
        )
        spend = sum(_number(e.materialization.metadata, "spend_usd") for e in events)
        result = DayResult(
            f"{day:%Y-%m-%d}",
            len(events),
            requests,
            spend,
            time.monotonic() - started,
            run.success,
        )
        status = "done" if run.success else "FAILED (see `make ui` for the run's log)"
        print(f" {status}: {requests:,} requests, ${spend:,.2f} in {result.seconds:.1f} s")
        failed: dict[str, list[Any]] = {}
        for evaluation in run.get_asset_check_evaluations():
            if not evaluation.passed:
                # Both hourly assets have a check named hour_checks: name the asset too.
                name = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
                failed.setdefault(name, []).append(evaluation)
        for name, evaluations in failed.items():
            first = evaluations[0]
            level = "warning" if first.severity.value == "WARN" else "failed"
            others = len(evaluations) - 1
            more = f" (and {others} more hour{'s' if others > 1 else ''})" if others else ""
            print(f"    check {level}: {name}: {first.description}{more}")
        results.append(result)
    return results


def print_summary(results: Sequence[DayResult]) -> None:
    from cz_pipeline.lib.settings import cloudzero_dry_run_reason, load_settings

    settings = load_settings()
    print()
    print(f"{'day':<12}{'hours':>6}{'requests':>12}{'spend (USD)':>16}")
    for r in results:
        print(f"{r.day:<12}{r.hours:>6}{r.requests:>12,}{r.spend:>16,.6f}")
    print(
        f"{'total':<12}{sum(r.hours for r in results):>6}"
        f"{sum(r.requests for r in results):>12,}{sum(r.spend for r in results):>16,.6f}"
    )
    print()
    print(f"source: {settings.source}    lake: {settings.lake_url}")
    dry_run_reason = cloudzero_dry_run_reason(
        "CLOUDZERO_API_KEY" in settings.secrets_set,
        settings.cloudzero_connection_id is not None,
        dry_run_requested=settings.dry_run_requested,
    )
    if dry_run_reason is None:
        print(f"CloudZero: sent to connection {settings.cloudzero_connection_id}")
    else:
        print(
            f"CloudZero: dry run ({dry_run_reason}); the exact request bodies are in "
            f"{settings.lake_url}/cloudzero_outbox/"
        )
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']}")
    print("Open the UI on these runs with:  make ui")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cz-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="materialize the last few days end to end")
    demo.add_argument("--days", type=int, default=3, help="how many past UTC days (default 3)")
    demo.add_argument(
        "--home", type=Path, default=Path(".dagster_home"), help="local Dagster instance folder"
    )
    local = commands.add_parser(
        "local-instance", help="write the local SQLite Dagster instance's dagster.yaml"
    )
    local.add_argument("--home", type=Path, default=Path(".dagster_home"))
    args = parser.parse_args(argv)
    if args.command == "local-instance":
        prepare_local_instance(args.home)
        return 0
    now = datetime.now(UTC)
    prepare_local_instance(args.home)
    start = start_partitions_at_demo_data(args.home, args.days, now)
    print(f"cz-pipeline demo: the last {args.days} UTC days, one Dagster run per day")
    print(f"  hourly partitions start at {start} UTC, where the demo's data begins")
    results = run_days(args.days, now)
    print_summary(results)
    return 0 if all(r.success for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
