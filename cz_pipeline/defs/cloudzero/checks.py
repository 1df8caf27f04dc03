"""Checks on what reached CloudZero: every hour delivered, and CloudZero's totals as the lake's."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import dagster as dg

from cz_pipeline.defs.check_results import check_result
from cz_pipeline.defs.cloudzero.assets import (
    BILLING_DROPS,
    LINE_ITEMS_DATASET,
    RECEIPT_FILE,
    UPLOADS_DATASET,
)
from cz_pipeline.defs.metadata import check_partition_keys
from cz_pipeline.defs.resources import CheckThresholdsResource, CloudZeroResource, LakeResource
from cz_pipeline.lib.cbf import line_item_cost
from cz_pipeline.lib.checks import CheckOutcome
from cz_pipeline.lib.cloudzero import CloudZeroReadScopeError
from cz_pipeline.lib.hours import parse_partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, STATUS_FILE

EVERY_HOUR_DELIVERED = "every_hour_delivered"
CLOUDZERO_MATCHES_LAKE = "cloudzero_matches_lake"


def _run_hours(context: dg.AssetCheckExecutionContext) -> list[datetime]:
    return [parse_partition_key(key) for key in check_partition_keys(context)]


def _first_failure(lake: Lake, hour: datetime) -> tuple[str, str, list[str]] | None:
    """(dataset.check, reason, request ids) of the first blocking failure upstream of the hour."""
    for dataset in (SPEND_LOGS_DATASET, LINE_ITEMS_DATASET):
        status: dict[str, Any] | None = lake.read_json(dataset, hour, STATUS_FILE)
        if status is None:
            return f"{dataset}", "not materialized", []
        for failed in status["failed_checks"]:
            if failed["severity"] == "ERROR" and failed["check"] != "upstream":
                ids = list(failed["offending_request_ids"])
                return f"{dataset}.{failed['check']}", failed["reason"], ids
    return None


def delivery_outcome(lake: Lake, hour: datetime) -> CheckOutcome:
    receipt: dict[str, Any] | None = lake.read_json(UPLOADS_DATASET, hour, RECEIPT_FILE)
    label = f"{hour:%Y-%m-%d %H:%M} UTC"
    if receipt is not None and receipt.get("delivered"):
        where = "written to the outbox (dry run)" if receipt.get("dry_run") else "delivered"
        return CheckOutcome(EVERY_HOUR_DELIVERED, hour, True, "ERROR", f"{label}: {where}")
    failure = _first_failure(lake, hour)
    if failure is not None:
        check, reason, ids = failure
        why = f"held back by {check}: {reason}"
    elif receipt is None:
        why, ids = "no upload receipt", []
    else:
        why, ids = f"CloudZero did not accept it: {receipt.get('error', 'unknown error')}", []
    return CheckOutcome(
        EVERY_HOUR_DELIVERED, hour, False, "ERROR", f"{label}: {why}", tuple(ids[:20])
    )


@dg.asset_check(
    asset=BILLING_DROPS,
    name=EVERY_HOUR_DELIVERED,
    blocking=True,
    description="Fails the run when any hour of it did not reach CloudZero (held back by a "
    "check, or refused by CloudZero), naming the hour, the check and up to 20 request ids. "
    "The other hours are delivered before it runs.",
)
def every_hour_delivered(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    the_lake = lake.build()
    outcomes = [delivery_outcome(the_lake, hour) for hour in _run_hours(context)]
    return check_result(EVERY_HOUR_DELIVERED, outcomes, asset_key=BILLING_DROPS)


@dg.asset_check(
    asset=BILLING_DROPS,
    name=CLOUDZERO_MATCHES_LAKE,
    description="Reads the run's months back from CloudZero (GET billing_drops/{month}) and warns "
    "about hours whose CloudZero total differs from the lake's line items. Skipped in a dry run "
    "and when the API key lacks the read scope.",
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
    the_lake = lake.build()
    tolerance = Decimal(check_thresholds.spend_tolerance)
    hours = [
        h
        for h in _run_hours(context)
        if (the_lake.read_json(UPLOADS_DATASET, h, RECEIPT_FILE) or {}).get("delivered")
    ]
    if not hours:
        return skipped("no hour of this run was delivered")
    outcomes = []
    with cloudzero.client() as client:
        try:
            months = {m: client.read_month(m) for m in sorted({f"{h:%Y-%m}" for h in hours})}
        except CloudZeroReadScopeError as error:
            return skipped(f"the API key cannot read billing drops back ({error.message})")
    for hour in hours:
        items = the_lake.read_hour(
            LINE_ITEMS_DATASET, hour, columns=["time/usage_start", "cost/cost"]
        )
        lake_cost = line_item_cost(items)
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
