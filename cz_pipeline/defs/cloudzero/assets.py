"""CloudZero line items and billing drops: each checked hour of spend, sent exactly once."""

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from cz_pipeline.defs.check_results import check_result
from cz_pipeline.defs.hour_status import held_reason
from cz_pipeline.defs.litellm.assets import SPEND_LOGS
from cz_pipeline.defs.metadata import run_window
from cz_pipeline.defs.partitions import hourly_partitions
from cz_pipeline.defs.resources import CheckThresholdsResource, CloudZeroResource, LakeResource
from cz_pipeline.defs.scale_out import hourly_backfill_policy
from cz_pipeline.lib import cbf_checks
from cz_pipeline.lib.cbf import (
    Grain,
    build_line_items,
    line_item_cost,
    line_item_lineage,
    line_item_schema,
    mapping_doc,
)
from cz_pipeline.lib.checks import CheckOutcome, held_back
from cz_pipeline.lib.cloudzero import CloudZeroError, render_bodies
from cz_pipeline.lib.hours import parse_partition_key, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.settings import Settings
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, STATUS_FILE, quarantine_dataset

LINE_ITEMS_DATASET = "cloudzero_line_items"
UPLOADS_DATASET = "cloudzero_uploads"
OUTBOX_DATASET = "cloudzero_outbox"
LINE_ITEMS = dg.AssetKey(LINE_ITEMS_DATASET)
BILLING_DROPS = dg.AssetKey("cloudzero_billing_drops")
RECEIPT_FILE = "receipt.json"
TAG_REGISTRY = "_resource_tags.parquet"
MONTH_LEDGER = "_rows_per_hour.json"

LINE_ITEM_CHECK_DESCRIPTIONS = {
    cbf_checks.CBF_CONTRACT: "Every value a string, cost and usage plain decimals, only known "
    "CBF columns, tag keys in CloudZero's characters, valid CZRNs, and every row on its own "
    "UTC hour. A failing hour is held back from CloudZero.",
    cbf_checks.COST_CONSERVED: "The exact decimal sum of cost/cost equals the hour's exact "
    "sum(spend) to within CZ_SPEND_TOLERANCE. A failing hour is held back from CloudZero.",
    cbf_checks.TAGS_CONSTANT_PER_RESOURCE: "Each resource/tag:* keeps one value per resource/id "
    "across the lake (CloudZero rewrites history with a tag's latest value). A failing hour is "
    "held back from CloudZero.",
    cbf_checks.MONTHLY_ROW_BUDGET: "Warns when the month's line items, projected from its hours "
    "so far, pass 80% of CloudZero's 1,000,000 rows per connection and month.",
}


def _column_lineage(grain: Grain) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=SPEND_LOGS, column_name=c) for c in sources]
            for column, sources in line_item_lineage(grain).items()
        }
    )


def _line_item_columns(grain: Grain) -> dg.TableSchema:
    how = {column: f"{source}. Why: {reason}" for column, source, reason in mapping_doc(grain)}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=f.name, type="string", description=how.get(f.name))
            for f in line_item_schema(grain)
        ]
    )


# The grain the code location was loaded with (CZ_CBF_GRAIN), for definition-level metadata.
_LOADED_GRAIN = Grain.parse(Settings.from_env().grain)

RECEIPT_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn("hour", "string", "The UTC hour sent."),
        dg.TableColumn("month", "string", "The billing month of the drop (the hour's UTC month)."),
        dg.TableColumn(
            "delivered", "bool", "CloudZero accepted every chunk (or the dry run wrote them)."
        ),
        dg.TableColumn("dry_run", "bool", "Bodies went to the outbox, not to CloudZero."),
        dg.TableColumn("drop_ids", "list<string>", "CloudZero's billing drop ids."),
        dg.TableColumn("rows", "int", "Line items sent."),
        dg.TableColumn("bytes", "int", "Request body bytes sent."),
        dg.TableColumn("chunks", "int", "Bodies: the first replace_hourly, the rest sum."),
        dg.TableColumn("requests", "int", "HTTP requests, retries included."),
        dg.TableColumn("attempts", "int", "Attempts at the whole hour."),
        dg.TableColumn("body_sha256", "list<string>", "sha256 of each body, for audits."),
    ]
)


def _read_registry(lake: Lake) -> pa.Table:
    content = lake.read_dataset_bytes(LINE_ITEMS_DATASET, TAG_REGISTRY)
    if content is None:
        return pa.table({"resource/id": pa.array([], pa.string())})
    return pq.read_table(pa.BufferReader(content))


def _write_registry(lake: Lake, registry: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(registry, sink, compression="zstd")
    lake.write_dataset_bytes(LINE_ITEMS_DATASET, TAG_REGISTRY, sink.getvalue().to_pybytes())


def _month_rows(lake: Lake, month: str) -> dict[datetime, int]:
    """Line items per hour of a month so far, from its ledger (read once per run and month)."""
    content = lake.read_dataset_bytes(LINE_ITEMS_DATASET, f"{month}{MONTH_LEDGER}")
    ledger: dict[str, int] = json.loads(content) if content else {}
    return {parse_partition_key(key): rows for key, rows in ledger.items()}


def _write_month_rows(lake: Lake, month: str, ledger: dict[datetime, int]) -> None:
    by_key = {partition_key(hour): rows for hour, rows in ledger.items()}
    content = json.dumps(by_key, sort_keys=True).encode()
    lake.write_dataset_bytes(LINE_ITEMS_DATASET, f"{month}{MONTH_LEDGER}", content)


def _status(
    hour: datetime, outcomes: Sequence[CheckOutcome], rows: int, held: str | None
) -> dict[str, Any]:
    failed = [o for o in outcomes if not o.passed]
    return {
        "hour": partition_key(hour),
        "held_back": held is not None or held_back(outcomes),
        "rows": rows,
        "failed_checks": [
            {"check": "upstream", "severity": "ERROR", "reason": held, "offending_request_ids": []}
        ]
        if held
        else [
            {
                "check": o.check,
                "severity": o.severity,
                "reason": o.reason,
                "offending_request_ids": list(o.offending_request_ids),
            }
            for o in failed
        ],
    }


@dg.asset(
    name=LINE_ITEMS_DATASET,
    group_name="cloudzero",
    deps=[SPEND_LOGS],
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill_policy,
    owners=["team:finops-data"],
    kinds={"python", "parquet"},
    metadata={
        "dagster/column_schema": _line_item_columns(_LOADED_GRAIN),
        "dagster/column_lineage": _column_lineage(_LOADED_GRAIN),
        "grain": _LOADED_GRAIN.to_spec(),
    },
    check_specs=[
        dg.AssetCheckSpec(name, asset=LINE_ITEMS_DATASET, description=description)
        for name, description in LINE_ITEM_CHECK_DESCRIPTIONS.items()
    ],
    code_version="1",
)
def cloudzero_line_items(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    cloudzero: CloudZeroResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.MaterializeResult:
    """CloudZero Common Bill Format line items of each UTC hour, exactly as they will be sent.

    One row per hour and grain combination (``CZ_CBF_GRAIN``; default provider, model, team,
    API key, user); every value is the string that goes on the wire. Hours whose spend logs
    were held back are held back here too. Files live at
    ``<CZ_LAKE_URL>/cloudzero_line_items/date=YYYY-MM-DD/hour=HH/``.
    """
    window = run_window(context)
    the_lake = lake.build()
    grain = cloudzero.line_item_grain()
    tolerance = Decimal(check_thresholds.spend_tolerance)
    registry = _read_registry(the_lake)
    ledgers: dict[str, dict[datetime, int]] = {}
    outcomes_by_check: dict[str, list[CheckOutcome]] = {n: [] for n in cbf_checks.LINE_ITEM_CHECKS}
    lineage = _column_lineage(grain)
    for hour in window.hours():
        upstream = held_reason(the_lake, SPEND_LOGS_DATASET, hour)
        month = f"{hour:%Y-%m}"
        if month not in ledgers:
            ledgers[month] = _month_rows(the_lake, month)
        ledger = ledgers[month]
        if upstream is not None:
            the_lake.write_json(
                LINE_ITEMS_DATASET, hour, STATUS_FILE, _status(hour, [], 0, upstream)
            )
            context.add_asset_metadata(
                {"dagster/row_count": 0, "held_back": True, "held_because": upstream},
                partition_key=partition_key(hour),
            )
            context.log.error(f"{partition_key(hour)} held back: {upstream}")
            continue
        spend_logs = the_lake.read_hour(SPEND_LOGS_DATASET, hour)
        spend_status = the_lake.read_json(SPEND_LOGS_DATASET, hour, STATUS_FILE)
        items = build_line_items(spend_logs, grain)
        ledger[hour] = items.num_rows
        outcomes = [
            cbf_checks.cbf_contract(hour, items),
            cbf_checks.cost_conserved(hour, items, Decimal(spend_status["spend"]), tolerance),
            cbf_checks.tags_constant_per_resource(hour, items, registry),
            cbf_checks.monthly_row_budget(hour, ledger),
        ]
        for outcome in outcomes:
            outcomes_by_check[outcome.check].append(outcome)
        held = held_back(outcomes)
        dataset = quarantine_dataset(LINE_ITEMS_DATASET) if held else LINE_ITEMS_DATASET
        written = the_lake.write_hour(dataset, hour, items)
        if not held:
            registry = cbf_checks.merge_known_tags(registry, items)
        the_lake.write_json(
            LINE_ITEMS_DATASET, hour, STATUS_FILE, _status(hour, outcomes, items.num_rows, None)
        )
        cost = line_item_cost(items)
        context.add_asset_metadata(
            {
                "dagster/row_count": items.num_rows,
                "dagster/column_lineage": lineage,
                "cost": str(cost),
                "held_back": held,
                "path": dg.MetadataValue.path(the_lake.display_path(written.path)),
                "file_bytes": written.bytes,
            },
            partition_key=partition_key(hour),
        )
    _write_registry(the_lake, registry)
    for month, ledger in ledgers.items():
        _write_month_rows(the_lake, month, ledger)
    results = [
        check_result(name, outcomes, asset_key=LINE_ITEMS)
        for name, outcomes in outcomes_by_check.items()
        if outcomes
    ]
    judged = {r.check_name for r in results}
    results += [
        dg.AssetCheckResult(
            check_name=name,
            passed=True,
            description="skipped: every hour of the run was held back upstream",
        )
        for name in cbf_checks.LINE_ITEM_CHECKS
        if name not in judged
    ]
    return dg.MaterializeResult(check_results=results)


def _dry_run(lake: Lake, hour: datetime, items: pa.Table, max_body_bytes: int) -> dict[str, Any]:
    bodies = render_bodies(hour, items, max_body_bytes)
    names = [f"body-{number:03d}.json" for number in range(1, len(bodies) + 1)]
    for name, body in zip(names, bodies, strict=True):
        lake.write_bytes(OUTBOX_DATASET, hour, name, body)
    # A longer earlier render of this hour must not leave bodies that would not be sent.
    lake.remove_hour_files(OUTBOX_DATASET, hour, keep=set(names), pattern="body-*.json")
    return {
        "hour": hour.isoformat(),
        "month": f"{hour:%Y-%m}",
        "dry_run": True,
        "drop_ids": [],
        "rows": items.num_rows,
        "bytes": sum(len(b) for b in bodies),
        "chunks": len(bodies),
        "attempts": 0,
        "requests": 0,
        "body_sha256": [hashlib.sha256(b).hexdigest() for b in bodies],
    }


@dg.asset(
    name="cloudzero_billing_drops",
    group_name="cloudzero",
    deps=[LINE_ITEMS],
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill_policy,
    owners=["team:finops-data"],
    kinds={"python", "cloudzero"},
    metadata={"dagster/column_schema": RECEIPT_COLUMNS},
    pool="cloudzero_api",
    code_version="1",
)
def cloudzero_billing_drops(
    context: dg.AssetExecutionContext, lake: LakeResource, cloudzero: CloudZeroResource
) -> dg.MaterializeResult:
    """Each checked hour sent to CloudZero's AnyCost Stream API with ``replace_hourly``.

    Re-sending an hour replaces it, never adds to it; an hour that is now empty is cleared with
    a zero-cost placeholder row. Requests go one at a time. Receipts (drop ids, body sha256) go
    to ``<CZ_LAKE_URL>/cloudzero_uploads/``. Without CLOUDZERO_API_KEY and
    CLOUDZERO_CONNECTION_ID this is a dry run: the exact bodies go to
    ``<CZ_LAKE_URL>/cloudzero_outbox/`` instead.
    """
    window = run_window(context)
    the_lake = lake.build()
    if cloudzero.dry_run:
        context.log.warning(
            "dry run: CLOUDZERO_API_KEY and CLOUDZERO_CONNECTION_ID are not set, so the "
            f"exact request bodies go to {the_lake.url}/{OUTBOX_DATASET}/ instead of CloudZero"
        )
    client = None if cloudzero.dry_run else cloudzero.client()
    try:
        for hour in window.hours():
            key = partition_key(hour)
            held = held_reason(the_lake, LINE_ITEMS_DATASET, hour)
            if held is not None:
                the_lake.write_json(UPLOADS_DATASET, hour, RECEIPT_FILE, {"held_back": held})
                context.add_asset_metadata(
                    {"delivered": False, "held_because": held}, partition_key=key
                )
                continue
            items = the_lake.read_hour(LINE_ITEMS_DATASET, hour)
            if client is None:
                receipt = _dry_run(the_lake, hour, items, cloudzero.max_body_bytes)
            else:
                try:
                    receipt = client.send_hour(hour, items).to_metadata()
                except CloudZeroError as error:
                    if error.status in (401, 403, 404):
                        raise dg.Failure(
                            f"CloudZero refused the upload of {key}: {error}"
                        ) from None
                    context.log.error(f"{key} not delivered: {error}")
                    receipt = {"delivered": False, "error": str(error)}
            receipt["delivered"] = receipt.get("delivered", True)
            the_lake.write_json(UPLOADS_DATASET, hour, RECEIPT_FILE, receipt)
            context.add_asset_metadata(
                {
                    "delivered": receipt["delivered"],
                    "dry_run": client is None,
                    "drop_ids": ", ".join(receipt.get("drop_ids", [])),
                    "dagster/row_count": int(receipt.get("rows", 0)),
                    "bytes": int(receipt.get("bytes", 0)),
                    "requests": int(receipt.get("requests", 0)),
                    "attempts": int(receipt.get("attempts", 0)),
                    "body_sha256": ", ".join(receipt.get("body_sha256", [])),
                },
                partition_key=key,
            )
    finally:
        if client is not None:
            client.close()
    return dg.MaterializeResult()
