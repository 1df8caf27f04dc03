"""When the job runs by itself: yesterday's hours every night, and hours that changed late."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg

from cz_pipeline.defs.jobs import litellm_to_cloudzero
from cz_pipeline.defs.litellm.checks import lookback_window
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib.checks import late_rows
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, parse_partition_key, partition_key
from cz_pipeline.lib.settings import load_settings
from cz_pipeline.lib.sources.base import HourlyTotalsSource
from cz_pipeline.lib.spend_log_lake import materialized_totals

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


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


def first_block(hours: list[datetime]) -> tuple[datetime, datetime]:
    """The first run of consecutive hours: one run re-runs only hours that changed."""
    last = hours[0]
    for hour in hours[1:]:
        if hour != last + HOUR:
            break
        last = hour
    return hours[0], last


@dg.sensor(
    name="late_rows_sensor",
    job=litellm_to_cloudzero,
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materializes hours whose LiteLLM rows changed after they were materialized "
    "(LiteLLM writes spend logs in delayed batches), looking back CZ_LATE_ROWS_LOOKBACK_HOURS "
    "(default 72). One run per tick, for the first block of consecutive changed hours; hours "
    "whose source did not change are never re-run.",
)
def late_rows_sensor(
    context: dg.SensorEvaluationContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.SensorResult | dg.SkipReason:
    source = spend_log_source.build()
    if not isinstance(source, HourlyTotalsSource):
        return dg.SkipReason(f"the {source.name} source cannot count rows per hour")
    window = lookback_window(datetime.now(UTC), check_thresholds.late_rows_lookback_hours)
    materialized = materialized_totals(lake.build(), window)
    if not materialized:
        return dg.SkipReason(f"no hour of {window} is materialized yet")
    outcome = late_rows(
        materialized,
        source.hourly_totals(window),
        spend_tolerance=Decimal(check_thresholds.spend_tolerance),
    )
    if outcome.passed:
        return dg.SkipReason(outcome.reason)
    changed = [parse_partition_key(k) for k in str(outcome.metadata["hours_to_rerun"]).split(",")]
    first, last = first_block(changed)
    totals = source.hourly_totals(HourWindow(first, last + HOUR))
    fingerprint = ",".join(f"{t.rows}:{t.spend}" for _, t in sorted(totals.items()))
    key = f"late:{partition_key(first)}...{partition_key(last)}:{fingerprint}"
    context.log.info(f"{len(changed)} hours changed late; re-running {first} to {last}")
    return dg.SensorResult(run_requests=[range_request(first, last, key)])
