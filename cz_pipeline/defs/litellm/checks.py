"""Checks on the spend-log lake that look beyond the run's hours: late rows, LiteLLM's daily table.

Both are WARN: they point at hours to re-run or at LiteLLM's own losses, but must not stop
good hours from reaching CloudZero. Neither takes the asset as an input (that would load every
hourly partition since the start); they read what they need through the resources.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import pyarrow as pa

from cz_pipeline.defs.check_results import check_result, window_result
from cz_pipeline.defs.litellm.assets import SPEND_LOGS
from cz_pipeline.defs.metadata import check_partition_keys
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib import checks
from cz_pipeline.lib.hour_record import read_records
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, parse_partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.sources.base import DailySpendSource, HourlyTotalsSource
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, quarantine_dataset
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

_DAILY_COLUMNS = ["api_key", "model", "provider", "spend", "status", "start_time"]


def _not_evaluated(
    context: dg.AssetCheckExecutionContext, check_name: str, reason: str
) -> Iterator[dg.AssetCheckResult]:
    """No result at all: Dagster shows the check as skipped (not evaluated), never as passed."""
    context.log.info(f"{check_name} not evaluated: {reason}")
    yield from ()


def _run_level(name: str, description: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=SPEND_LOGS, description=description)]


def lookback_window(now: datetime, hours: int) -> HourWindow:
    """The last ``hours`` complete UTC hours before ``now``."""
    end = floor_hour(now)
    return HourWindow(end - hours * HOUR, end)


# Run-level checks are multi-asset checks with can_subset=True so that one that cannot judge
# may return no result: Dagster then shows it as skipped instead of a green pass.
@dg.multi_asset_check(
    specs=_run_level(
        checks.LATE_ROWS,
        "Warns about hours whose LiteLLM rows changed after they were materialized (LiteLLM "
        "writes spend logs in delayed batches), within the last CZ_LATE_ROWS_LOOKBACK_HOURS "
        "hours, and lists the hours to re-run. Not evaluated for a source that cannot count "
        "rows per hour.",
    ),
    can_subset=True,
)
def late_rows(
    context: dg.AssetCheckExecutionContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> Iterator[dg.AssetCheckResult]:
    source = spend_log_source.build()
    if not isinstance(source, HourlyTotalsSource):
        reason = f"the {source.name} source cannot count rows per hour"
        yield from _not_evaluated(context, checks.LATE_ROWS, reason)
        return
    window = lookback_window(datetime.now(UTC), check_thresholds.late_rows_lookback_hours)
    materialized = {
        hour: record.spend_logs.totals
        for hour, record in read_records(lake.build(), window.hours()).items()
        if record.spend_logs is not None
    }
    if not materialized:
        reason = f"no hour of {window} is materialized yet"
        yield from _not_evaluated(context, checks.LATE_ROWS, reason)
        return
    outcome = checks.late_rows(
        materialized,
        source.hourly_totals(window),
        spend_tolerance=Decimal(check_thresholds.spend_tolerance),
    )
    yield window_result(outcome)


def complete_days(context: dg.AssetCheckExecutionContext) -> list[date]:
    """UTC days whose 24 hours all lie in this run's range."""
    hours = sorted(parse_partition_key(key) for key in check_partition_keys(context))
    days = sorted({hour.date() for hour in hours})
    return [day for day in days if sum(1 for hour in hours if hour.date() == day) == 24]


def _lake_day(lake: Lake, day: date) -> pa.Table:
    """The day's extracted rows, held-back hours included: this compares LiteLLM with itself."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    tables = [LAKE_SCHEMA.empty_table().select(_DAILY_COLUMNS)]
    records = read_records(lake, HourWindow(start, start + timedelta(days=1)).hours())
    for hour, record in records.items():
        if record.spend_logs is None:
            continue
        dataset = SPEND_LOGS_DATASET
        if record.spend_logs.held_back:
            dataset = quarantine_dataset(SPEND_LOGS_DATASET)
        tables.append(
            lake.read_hour(dataset, hour, columns=_DAILY_COLUMNS, dataset_file=SPEND_LOGS_DATASET)
        )
    return pa.concat_tables(tables)


@dg.multi_asset_check(
    specs=_run_level(
        checks.DAILY_RECONCILIATION,
        "Warns when a complete UTC day of the lake differs from LiteLLM's own "
        "LiteLLM_DailyUserSpend per API key, model and provider (spend beyond "
        "CZ_DAILY_SPEND_TOLERANCE, or request counts), naming the days. It catches rows "
        "LiteLLM dropped from its spend logs on duplicate provider request ids, and double "
        "counting. Not evaluated for a source without the daily table or a run without a "
        "complete UTC day.",
    ),
    can_subset=True,
)
def daily_reconciliation(
    context: dg.AssetCheckExecutionContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> Iterator[dg.AssetCheckResult]:
    source = spend_log_source.build()
    if not isinstance(source, DailySpendSource):
        reason = f"the {source.name} source has no LiteLLM daily table"
        yield from _not_evaluated(context, checks.DAILY_RECONCILIATION, reason)
        return
    days = complete_days(context)
    if not days:
        reason = "this run covers no complete UTC day"
        yield from _not_evaluated(context, checks.DAILY_RECONCILIATION, reason)
        return
    the_lake = lake.build()
    daily = source.daily_user_spend(days[0], days[-1])
    outcomes, tables = [], []
    for day in days:
        outcome, differences = checks.daily_reconciliation(
            _lake_day(the_lake, day),
            daily,
            spend_tolerance=Decimal(check_thresholds.daily_spend_tolerance),
            day=day,
        )
        outcomes.append(outcome)
        tables.append(differences)
    result = check_result(checks.DAILY_RECONCILIATION, outcomes, unit="day")
    differences = pa.concat_tables(tables)
    if differences.num_rows:
        metadata = dict(result.metadata)
        metadata["differences"] = dg.MetadataValue.md(checks.differences_markdown(differences))
        result = result._replace(metadata=metadata)
    yield result
