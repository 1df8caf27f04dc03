"""Checks on the spend-log lake that look beyond the run's hours: late rows, LiteLLM's daily table.

Both are WARN: they point at hours to re-run or at LiteLLM's own losses, but must not stop
good hours from reaching CloudZero. Neither takes the asset as an input (that would load every
hourly partition since the start); they read what they need through the resources.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import pyarrow as pa

from cz_pipeline.defs.check_results import check_result
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


def _skipped(check_name: str, reason: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"skipped: {reason}",
        metadata={"skipped": reason},
    )


def lookback_window(now: datetime, hours: int) -> HourWindow:
    """The last ``hours`` complete UTC hours before ``now``."""
    end = floor_hour(now)
    return HourWindow(end - hours * HOUR, end)


@dg.asset_check(
    asset=SPEND_LOGS,
    name=checks.LATE_ROWS,
    description="Warns about hours whose LiteLLM rows changed after they were materialized "
    "(LiteLLM writes spend logs in delayed batches), within the last "
    "CZ_LATE_ROWS_LOOKBACK_HOURS hours, and lists the hours to re-run.",
)
def late_rows(
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.AssetCheckResult:
    source = spend_log_source.build()
    if not isinstance(source, HourlyTotalsSource):
        return _skipped(checks.LATE_ROWS, f"the {source.name} source cannot count rows per hour")
    window = lookback_window(datetime.now(UTC), check_thresholds.late_rows_lookback_hours)
    materialized = {
        hour: record.spend_logs.totals
        for hour, record in read_records(lake.build(), window.hours()).items()
        if record.spend_logs is not None
    }
    if not materialized:
        return _skipped(checks.LATE_ROWS, f"no hour of {window} is materialized yet")
    outcome = checks.late_rows(
        materialized,
        source.hourly_totals(window),
        spend_tolerance=Decimal(check_thresholds.spend_tolerance),
    )
    return check_result(checks.LATE_ROWS, [outcome], description=outcome.reason)


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


@dg.asset_check(
    asset=SPEND_LOGS,
    name=checks.DAILY_RECONCILIATION,
    description="Warns when a complete UTC day of the lake differs from LiteLLM's own "
    "LiteLLM_DailyUserSpend per API key, model and provider (spend beyond "
    "CZ_DAILY_SPEND_TOLERANCE, or request counts). It catches rows LiteLLM dropped from its "
    "spend logs on duplicate provider request ids, and double counting.",
)
def daily_reconciliation(
    context: dg.AssetCheckExecutionContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.AssetCheckResult:
    source = spend_log_source.build()
    if not isinstance(source, DailySpendSource):
        return _skipped(
            checks.DAILY_RECONCILIATION, f"the {source.name} source has no LiteLLM daily table"
        )
    days = complete_days(context)
    if not days:
        return _skipped(checks.DAILY_RECONCILIATION, "this run covers no complete UTC day")
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
    result = check_result(checks.DAILY_RECONCILIATION, outcomes)
    differences = pa.concat_tables(tables)
    if differences.num_rows:
        metadata = dict(result.metadata)
        metadata["differences"] = dg.MetadataValue.md(checks.differences_markdown(differences))
        return result._replace(metadata=metadata)
    return result
