"""When the job runs by itself: yesterday's hours every night, and every hour CloudZero holds
differently from LiteLLM (late rows, crashes, stale sends)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg

from cz_pipeline.defs.jobs import litellm_to_cloudzero
from cz_pipeline.defs.litellm.checks import lookback_window
from cz_pipeline.defs.partitions import hourly_partitions
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    CloudZeroResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib.hour_record import read_records
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, partition_key
from cz_pipeline.lib.settings import load_settings
from cz_pipeline.lib.sources.base import HourlyTotalsSource
from cz_pipeline.lib.sync import blocks, drifts, fingerprint

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"
IN_PROGRESS_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def range_request(first: datetime, last: datetime, run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        tags={RANGE_START: partition_key(first), RANGE_END: partition_key(last)},
    )


def yesterday(scheduled: datetime) -> tuple[datetime, datetime]:
    """First and last hour of the UTC day before ``scheduled``."""
    day = floor_hour(scheduled).replace(hour=0) - timedelta(days=1)
    return day, day + 23 * HOUR


@dg.schedule(
    name="daily_litellm_to_cloudzero",
    job=litellm_to_cloudzero,
    cron_schedule=load_settings().daily_schedule_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night (CZ_DAILY_SCHEDULE_CRON, default 02:00 UTC), yesterday's 24 hours "
    "as one run. Turn it off in the UI (Automation) or with `dagster schedule stop`.",
)
def daily_litellm_to_cloudzero(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    first, last = yesterday(context.scheduled_execution_time)
    return range_request(first, last, f"daily:{partition_key(first)}...{partition_key(last)}")


def _hours_in_flight(instance: dg.DagsterInstance) -> set[datetime]:
    """Hours that a queued or running run of the job is already working on."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=litellm_to_cloudzero.name, statuses=IN_PROGRESS_STATUSES)
    )
    hours: set[datetime] = set()
    for run in runs:
        first = run.tags.get(RANGE_START) or run.tags.get(PARTITION)
        last = run.tags.get(RANGE_END) or first
        if first and last:
            hours.update(HourWindow.from_partition_keys(first, last).hours())
    return hours


def _last_failed_run(instance: dg.DagsterInstance) -> str:
    """The newest failed run of the job: a run killed before it wrote anything changes no
    record, so its hours' run keys must change once it has failed, or they would never rerun."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=litellm_to_cloudzero.name,
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        ),
        limit=1,
    )
    return runs[0].run_id if runs else ""


@dg.sensor(
    name="cloudzero_sync_sensor",
    job=litellm_to_cloudzero,
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps CloudZero equal to LiteLLM: compares LiteLLM's rows and exact spend per "
    "hour over the last CZ_LATE_ROWS_LOOKBACK_HOURS (default 72) with what each hour's record "
    "says was last sent, and runs every hour that differs or was never fully sent (late rows, "
    "a run killed mid-send, spend logs materialized alone, a send that lost to a newer "
    "snapshot). One run per block of consecutive hours; hours that agree, hours a running run "
    "covers, and hours held back by a check on the same data are not re-run.",
)
def cloudzero_sync_sensor(
    context: dg.SensorEvaluationContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    cloudzero: CloudZeroResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.SensorResult | dg.SkipReason:
    source = spend_log_source.build()
    if not isinstance(source, HourlyTotalsSource):
        return dg.SkipReason(f"the {source.name} source cannot count rows per hour")
    window = lookback_window(datetime.now(UTC), check_thresholds.late_rows_lookback_hours)
    first_partition = hourly_partitions.start
    if window.end <= first_partition:
        return dg.SkipReason(f"{window} is before the first partition")
    window = HourWindow(max(window.start, first_partition), window.end)
    records = read_records(lake.build(), window.hours())
    source_now = source.hourly_totals(window)
    found = drifts(
        records,
        source_now,
        dry_run=cloudzero.dry_run,
        tolerance=Decimal(check_thresholds.spend_tolerance),
    )
    in_flight = _hours_in_flight(context.instance)
    for d in found:
        if d.settled:
            context.log.warning(f"{partition_key(d.hour)} needs a person: {d.reason}")
    to_run = [d for d in found if not d.settled and d.hour not in in_flight]
    if not to_run:
        return dg.SkipReason(
            f"CloudZero agrees with LiteLLM on every hour of {window} that can be re-run"
            + (f" ({len(found)} hours wait for a person or a running run)" if found else "")
        )
    for d in to_run:
        context.log.info(f"{partition_key(d.hour)}: {d.reason}")
    requests = []
    last_failure = _last_failed_run(context.instance)
    for first, last in blocks(d.hour for d in to_run):
        block = [records[h] for h in HourWindow(first, last + HOUR).hours()]
        state = fingerprint(block, source_now, also=last_failure)
        key = f"sync:{partition_key(first)}...{partition_key(last)}:{state}"
        requests.append(range_request(first, last, key))
    return dg.SensorResult(run_requests=requests)
