"""Checks on what reached CloudZero: every hour delivered, and CloudZero's totals as the lake's."""

from datetime import UTC, datetime
from decimal import Decimal

import dagster as dg

from cz_pipeline.defs.check_results import check_result
from cz_pipeline.defs.cloudzero.assets import BILLING_DROPS
from cz_pipeline.defs.litellm.checks import lookback_window
from cz_pipeline.defs.metadata import check_partition_keys
from cz_pipeline.defs.resources import CheckThresholdsResource, CloudZeroResource, LakeResource
from cz_pipeline.lib.checks import CheckOutcome
from cz_pipeline.lib.cloudzero import CloudZeroReadScopeError
from cz_pipeline.lib.hour_record import HourRecord, read_records
from cz_pipeline.lib.hours import parse_partition_key

EVERY_HOUR_DELIVERED = "every_hour_delivered"
CLOUDZERO_MATCHES_LAKE = "cloudzero_matches_lake"


def _run_hours(context: dg.AssetCheckExecutionContext) -> list[datetime]:
    return [parse_partition_key(key) for key in check_partition_keys(context)]


def delivery_outcome(record: HourRecord, dry_run: bool) -> CheckOutcome:
    """Whether the hour's current line items reached CloudZero (in a dry run: the outbox).

    A ``sending`` record (a crash mid-send), a failed send, or a send older than the line items
    is not delivered; an outbox write counts only when this run is a dry run.
    """
    hour = record.hour
    label = f"{hour:%Y-%m-%d %H:%M} UTC"
    sent, built = record.delivery, record.line_items
    held = record.line_items_hold()
    current = held is None and sent is not None and built is not None and sent.sent(dry_run)
    if current and sent is not None and built is not None and sent.snapshot >= built.snapshot:
        where = "written to the outbox (dry run)" if dry_run else "delivered"
        if sent.snapshot > built.snapshot:
            where += f" from a newer LiteLLM snapshot ({sent.snapshot.isoformat()})"
        return CheckOutcome(EVERY_HOUR_DELIVERED, hour, True, "ERROR", f"{label}: {where}")
    ids: tuple[str, ...] = ()
    blocking = record.first_blocking()
    if held is not None and blocking is not None:
        dataset, verdict = blocking
        why = f"held back by {dataset}.{verdict.check}: {verdict.reason}"
        ids = verdict.offending_request_ids
    elif held is not None:
        why = f"held back: {held}"
    elif sent is None:
        why = "never sent"
    elif sent.state == "sending":
        why = f"a send started at {sent.written_at.isoformat()} never finished (a crash)"
    elif sent.state == "failed":
        why = f"CloudZero did not accept it: {sent.error}"
    elif not sent.sent(dry_run):
        why = (
            "only written to the outbox by a dry run"
            if sent.dry_run
            else "sent to CloudZero, but this dry run wrote nothing to the outbox"
        )
    else:
        why = "the line items changed since it was last sent"
    return CheckOutcome(EVERY_HOUR_DELIVERED, hour, False, "ERROR", f"{label}: {why}", ids[:20])


@dg.asset_check(
    asset=BILLING_DROPS,
    name=EVERY_HOUR_DELIVERED,
    blocking=True,
    description="Fails the run when any hour of it did not reach CloudZero (held back by a "
    "check, refused by CloudZero, or a send that never finished), naming the hour, the check "
    "and up to 20 request ids. In a dry run, an hour written to the outbox passes. The other "
    "hours are delivered before it runs.",
)
def every_hour_delivered(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, cloudzero: CloudZeroResource
) -> dg.AssetCheckResult:
    records = read_records(lake.build(), _run_hours(context))
    outcomes = [delivery_outcome(record, cloudzero.dry_run) for record in records.values()]
    return check_result(EVERY_HOUR_DELIVERED, outcomes, asset_key=BILLING_DROPS)


@dg.asset_check(
    asset=BILLING_DROPS,
    name=CLOUDZERO_MATCHES_LAKE,
    description="Reads the months back from CloudZero (GET billing_drops/{month}) and warns about "
    "hours whose CloudZero total differs from what their record says was delivered: the run's "
    "hours and every delivered hour of the last CZ_LATE_ROWS_LOOKBACK_HOURS. Skipped in a dry "
    "run and when the API key lacks the read scope.",
)
def cloudzero_matches_lake(
    context: dg.AssetCheckExecutionContext,
    lake: LakeResource,
    cloudzero: CloudZeroResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.AssetCheckResult:
    def skipped(reason: str) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"skipped: {reason}",
            metadata={"skipped": reason},
        )

    if cloudzero.dry_run:
        return skipped("dry run: nothing was sent to CloudZero")
    tolerance = Decimal(check_thresholds.spend_tolerance)
    lookback = lookback_window(datetime.now(UTC), check_thresholds.late_rows_lookback_hours)
    records = read_records(lake.build(), {*_run_hours(context), *lookback.hours()})
    delivered = {
        hour: record.delivery
        for hour, record in records.items()
        if record.delivery is not None and record.delivery.sent(dry_run=False)
    }
    if not delivered:
        return skipped("no hour of this run or the look-back was delivered")
    outcomes = []
    with cloudzero.client() as client:
        try:
            months = {m: client.read_month(m) for m in sorted({f"{h:%Y-%m}" for h in delivered})}
        except CloudZeroReadScopeError as error:
            return skipped(f"the API key cannot read billing drops back ({error.message})")
    for hour, sent in sorted(delivered.items()):
        lake_cost = sent.cost
        cloud_cost = months[f"{hour:%Y-%m}"].hour_costs.get(hour, Decimal(0))
        matches = abs(cloud_cost - lake_cost) <= tolerance
        outcomes.append(
            CheckOutcome(
                CLOUDZERO_MATCHES_LAKE,
                hour,
                matches,
                "WARN",
                f"{hour:%Y-%m-%d %H:%M} UTC: CloudZero holds {cloud_cost} USD, "
                f"the lake {lake_cost} USD",
            )
        )
    return check_result(CLOUDZERO_MATCHES_LAKE, outcomes, asset_key=BILLING_DROPS)
