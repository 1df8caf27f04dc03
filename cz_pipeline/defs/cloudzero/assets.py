"""CloudZero line items and billing drops: each checked hour of spend, sent exactly once."""

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import pyarrow as pa

from cz_pipeline.defs.check_results import log_hour_verdicts
from cz_pipeline.defs.litellm.assets import SPEND_LOGS
from cz_pipeline.defs.metadata import hour_check_specs, markdown_text, run_window
from cz_pipeline.defs.partitions import hourly_partitions
from cz_pipeline.defs.resources import CheckThresholdsResource, CloudZeroResource, LakeResource
from cz_pipeline.defs.scale_out import hourly_backfill_policy
from cz_pipeline.lib import cbf_checks
from cz_pipeline.lib.cbf import (
    TAG_PREFIX,
    Grain,
    build_line_items,
    line_item_cost,
    line_item_lineage,
    line_item_schema,
    mapping_doc,
)
from cz_pipeline.lib.checks import CheckOutcome, held_back
from cz_pipeline.lib.cloudzero import CloudZeroError, HourReceipt, month_of, render_bodies
from cz_pipeline.lib.hour_record import (
    NEVER_READ,
    DeliveryPiece,
    DeliveryState,
    HourRecord,
    LineItemPiece,
    Verdict,
    newer_snapshot,
    read_record,
    read_records,
    write_piece,
)
from cz_pipeline.lib.hours import month_window, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.line_item_lake import LINE_ITEMS_DATASET, known_tags, month_line_item_counts
from cz_pipeline.lib.settings import load_settings
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, quarantine_dataset

OUTBOX_DATASET = "cloudzero_outbox"
LINE_ITEMS = dg.AssetKey(LINE_ITEMS_DATASET)
BILLING_DROPS = dg.AssetKey("cloudzero_billing_drops")

LINE_ITEM_CHECKS_SUMMARY = """The hour's line items, judged once per hour on the hour's
partition: failed if any rule below failed, ERROR when the rule holds the hour back from
CloudZero (every rule but `monthly_row_budget`), WARN otherwise. The evaluation's `rules` table
gives each rule's verdict and reason."""

LINE_ITEM_CHECK_RULES = {
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
            dg.TableColumn(
                name=f.name,
                type="string",
                description=markdown_text(how[f.name]) if f.name in how else None,
            )
            for f in line_item_schema(grain)
        ]
    )


def mapping_markdown(grain: Grain) -> str:
    """Each CBF column with its source columns, as a table the open-source UI renders.

    Dagster's open-source UI does not draw ``dagster/column_lineage`` (Dagster+ does), but it
    renders an asset's description as Markdown.
    """
    sources = line_item_lineage(grain)
    rows = [
        f"| `{column}` | {', '.join(f'`{c}`' for c in sources.get(column, [])) or 'none'} | "
        f"{markdown_text(how).replace('|', '/')} |"
        for column, how, _ in mapping_doc(grain)
    ]
    header = f"| CBF column | from `{SPEND_LOGS_DATASET}` columns | how |\n|---|---|---|\n"
    return header + "\n".join(rows)


# The grain the code location was loaded with (CZ_CBF_GRAIN), for definition-level metadata.
_LOADED_GRAIN = Grain.parse(load_settings().grain)

DELIVERY_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn(
            "state",
            "string",
            "sending (before the first chunk; a crash leaves it), delivered (every chunk "
            "accepted), dry_run (written to the outbox), failed (with the error), or, not "
            "stored, held_back / stale (a newer LiteLLM snapshot was already sent).",
        ),
        dg.TableColumn("dry_run", "bool", "Bodies went to the outbox, not to CloudZero."),
        dg.TableColumn("snapshot", "string", "The LiteLLM snapshot the hour was read from."),
        dg.TableColumn("cost", "string", "Exact cost/cost sent."),
        dg.TableColumn("placeholder", "bool", "A zero-cost row cleared an emptied hour."),
        dg.TableColumn("drop_ids", "list<string>", "CloudZero's billing drop ids."),
        dg.TableColumn("rows", "int", "Line items sent."),
        dg.TableColumn("bytes", "int", "Request body bytes sent."),
        dg.TableColumn("requests", "int", "HTTP requests, retries included."),
        dg.TableColumn("attempts", "int", "Attempts at the whole hour."),
        dg.TableColumn("body_sha256", "list<string>", "sha256 of each body, for audits."),
    ]
)


def _write_line_item_piece(
    lake: Lake,
    hour: datetime,
    record: HourRecord,
    rows: int = 0,
    cost: Decimal = Decimal(0),
    outcomes: Sequence[CheckOutcome] = (),
    held_because: str = "",
) -> None:
    spend_logs = record.spend_logs
    write_piece(
        lake,
        hour,
        LineItemPiece(
            snapshot=spend_logs.snapshot if spend_logs else NEVER_READ,
            built_at=datetime.now(UTC),
            source_rows=spend_logs.rows if spend_logs else 0,
            source_spend=spend_logs.spend if spend_logs else Decimal(0),
            rows=rows,
            cost=cost,
            held_back=bool(held_because) or held_back(outcomes),
            held_because=held_because,
            verdicts=tuple(Verdict.of(outcome) for outcome in outcomes),
        ),
    )


LINE_ITEMS_DESCRIPTION = f"""CloudZero Common Bill Format line items of each UTC hour, exactly
as they will be sent.

One row per hour and grain combination (`CZ_CBF_GRAIN`; loaded with `{_LOADED_GRAIN.to_spec()}`);
every value is the string that goes on the wire. Hours whose spend logs were held back are held
back here too. Files live at `<CZ_LAKE_URL>/cloudzero_line_items/date=YYYY-MM-DD/hour=HH/`.
Each hour's check verdicts are on that hour's partition.

**Where each column comes from** (also in `dagster/column_lineage`, which Dagster+ draws):

{mapping_markdown(_LOADED_GRAIN)}
"""


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LINE_ITEMS,
            description=LINE_ITEMS_DESCRIPTION,
            deps=[SPEND_LOGS],
            group_name="cloudzero",
            owners=["team:finops-data"],
            kinds={"python", "parquet"},
            metadata={
                "dagster/column_schema": _line_item_columns(_LOADED_GRAIN),
                "dagster/column_lineage": _column_lineage(_LOADED_GRAIN),
                "grain": _LOADED_GRAIN.to_spec(),
            },
            code_version="1",
        )
    ],
    name=LINE_ITEMS_DATASET,
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill_policy,
    check_specs=hour_check_specs(LINE_ITEMS, LINE_ITEM_CHECKS_SUMMARY, LINE_ITEM_CHECK_RULES),
    # Makes the check output optional: each hour's verdict is logged as its own evaluation.
    can_subset=True,
)
def cloudzero_line_items(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    cloudzero: CloudZeroResource,
    check_thresholds: CheckThresholdsResource,
) -> Iterator[dg.MaterializeResult]:
    window = run_window(context)
    the_lake = lake.build()
    grain = cloudzero.line_item_grain()
    tolerance = Decimal(check_thresholds.spend_tolerance)
    hours = list(window.hours())
    records = read_records(the_lake, hours)
    tag_columns = [name for name in line_item_schema(grain).names if name.startswith(TAG_PREFIX)]
    registry = known_tags(the_lake, tag_columns, skip=hours)
    ledgers: dict[str, dict[datetime, int]] = {}
    judged: list[CheckOutcome] = []
    lineage = _column_lineage(grain)
    for hour in hours:
        key = partition_key(hour)
        record = records[hour]
        month = f"{hour:%Y-%m}"
        if month not in ledgers:
            month_records = read_records(the_lake, month_window(hour).hours())
            ledgers[month] = month_line_item_counts(month_records)
        ledger = ledgers[month]
        upstream = record.spend_logs_hold()
        if upstream is not None:
            _write_line_item_piece(the_lake, hour, record, held_because=upstream)
            context.add_asset_metadata(
                {"dagster/row_count": 0, "held_back": True, "held_because": upstream},
                partition_key=key,
            )
            context.log.error(f"{key} held back: {upstream}")
            continue
        assert record.spend_logs is not None
        stale = newer_snapshot(read_record(the_lake, hour).line_items, record.spend_logs.snapshot)
        if stale is not None:
            context.log.warning(f"{key} {stale}")
            context.add_asset_metadata({"stale": stale}, partition_key=key)
            continue
        spend_logs = the_lake.read_hour(SPEND_LOGS_DATASET, hour)
        items = build_line_items(spend_logs, grain)
        ledger[hour] = items.num_rows
        outcomes = [
            cbf_checks.cbf_contract(hour, items),
            cbf_checks.cost_conserved(hour, items, record.spend_logs.spend, tolerance),
            cbf_checks.tags_constant_per_resource(hour, items, registry),
            cbf_checks.monthly_row_budget(hour, ledger),
        ]
        judged.extend(outcomes)
        held = held_back(outcomes)
        dataset = quarantine_dataset(LINE_ITEMS_DATASET) if held else LINE_ITEMS_DATASET
        written = the_lake.write_hour(dataset, hour, items)
        if not held:
            registry = cbf_checks.merge_known_tags(registry, items)
        cost = line_item_cost(items)
        _write_line_item_piece(the_lake, hour, record, items.num_rows, cost, outcomes)
        context.add_asset_metadata(
            {
                "dagster/row_count": items.num_rows,
                "dagster/column_lineage": lineage,
                "cost": str(cost),
                "held_back": held,
                "snapshot": record.spend_logs.snapshot.isoformat(),
                "path": dg.MetadataValue.path(the_lake.display_path(written.path)),
                "file_bytes": written.bytes,
            },
            partition_key=key,
        )
    log_hour_verdicts(context, LINE_ITEMS, judged)
    yield dg.MaterializeResult(asset_key=LINE_ITEMS)


def _dry_run(lake: Lake, hour: datetime, items: pa.Table, max_body_bytes: int) -> HourReceipt:
    """Write the exact bodies an upload would send to the outbox (none for ``items`` None)."""
    bodies = render_bodies(hour, items, max_body_bytes)
    names = [f"body-{number:03d}.json" for number in range(1, len(bodies) + 1)]
    for name, body in zip(names, bodies, strict=True):
        lake.write_bytes(OUTBOX_DATASET, hour, name, body)
    # A longer earlier render of this hour must not leave bodies that would not be sent.
    lake.remove_hour_files(OUTBOX_DATASET, hour, keep=set(names), pattern="body-*.json")
    return HourReceipt(
        hour=hour,
        month=month_of(hour),
        drop_ids=(),
        rows=items.num_rows,
        bytes=sum(len(b) for b in bodies),
        chunks=len(bodies),
        attempts=0,
        requests=0,
        body_sha256=tuple(hashlib.sha256(b).hexdigest() for b in bodies),
        row_counts=(),
        placeholder=items.num_rows == 0,
        max_body_bytes=max_body_bytes,
    )


def _delivery_metadata(piece: DeliveryPiece) -> dict[str, Any]:
    return {
        "state": piece.state,
        "delivered": piece.state == "delivered",
        "dry_run": piece.dry_run,
        "snapshot": piece.snapshot.isoformat(),
        "cost": str(piece.cost),
        "placeholder": piece.placeholder,
        "drop_ids": ", ".join(piece.drop_ids),
        "dagster/row_count": piece.rows,
        "bytes": piece.bytes,
        "requests": piece.requests,
        "attempts": piece.attempts,
        "body_sha256": ", ".join(piece.body_sha256),
    }


@dg.asset(
    name="cloudzero_billing_drops",
    group_name="cloudzero",
    deps=[LINE_ITEMS],
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill_policy,
    owners=["team:finops-data"],
    kinds={"python", "cloudzero"},
    metadata={"dagster/column_schema": DELIVERY_COLUMNS},
    pool="cloudzero_api",
    code_version="1",
)
def cloudzero_billing_drops(
    context: dg.AssetExecutionContext, lake: LakeResource, cloudzero: CloudZeroResource
) -> dg.MaterializeResult:
    """Each checked hour sent to CloudZero's AnyCost Stream API with ``replace_hourly``.

    Re-sending an hour replaces it, never adds to it. An hour that is now empty is cleared with a
    zero-cost placeholder row when CloudZero may hold cost for it; a quiet hour sent for the
    first time sends nothing. Requests go one at a time, and (holding the ``cloudzero_api``
    pool) each hour's delivery record is read first: an hour already sent from a newer LiteLLM
    snapshot is skipped as stale. The record says ``sending`` before the first chunk and
    ``delivered`` after the last. Without CLOUDZERO_API_KEY and CLOUDZERO_CONNECTION_ID this is
    a dry run: the exact bodies go to ``<CZ_LAKE_URL>/cloudzero_outbox/`` instead.
    """
    window = run_window(context)
    the_lake = lake.build()
    dry_run_reason = cloudzero.dry_run_reason()
    dry_run = dry_run_reason is not None
    if dry_run:
        context.log.warning(
            f"dry run: {dry_run_reason}, so the exact request bodies go to "
            f"{the_lake.url}/{OUTBOX_DATASET}/ instead of CloudZero"
        )
    client = None if dry_run else cloudzero.client()
    try:
        for hour in window.hours():
            key = partition_key(hour)
            record = read_record(the_lake, hour)
            held = record.line_items_hold()
            if held is not None:
                context.log.error(f"{key} not sent: {held}")
                context.add_asset_metadata(
                    {"state": "held_back", "delivered": False, "held_because": held},
                    partition_key=key,
                )
                continue
            assert record.line_items is not None
            built = record.line_items
            stale = newer_snapshot(record.delivery, built.snapshot)
            if stale is not None:
                context.log.warning(f"{key} {stale}")
                context.add_asset_metadata(
                    {"state": "stale", "delivered": False, "stale": stale}, partition_key=key
                )
                continue
            items = the_lake.read_hour(LINE_ITEMS_DATASET, hour)
            ahead = DeliveryPiece(
                state="sending",
                dry_run=dry_run,
                snapshot=built.snapshot,
                written_at=datetime.now(UTC),
                run_id=context.run.run_id,
                source_rows=built.source_rows,
                source_spend=built.source_spend,
                rows=items.num_rows,
                cost=built.cost,
                placeholder=items.num_rows == 0,
            )
            done_state: DeliveryState = "dry_run" if dry_run else "delivered"
            if not items.num_rows and not record.cloudzero_may_hold_data(dry_run):
                # Nothing was ever sent for this quiet hour: nothing to clear, nothing to send.
                if dry_run:
                    the_lake.remove_hour_files(OUTBOX_DATASET, hour, set(), "body-*.json")
                done = replace(ahead, state=done_state, placeholder=False)
                write_piece(the_lake, hour, done)
                context.add_asset_metadata(_delivery_metadata(done), partition_key=key)
                continue
            write_piece(the_lake, hour, ahead)
            try:
                if client is None:
                    receipt = _dry_run(the_lake, hour, items, cloudzero.max_body_bytes)
                else:
                    receipt = client.send_hour(hour, items)
            except CloudZeroError as error:
                failed = replace(ahead, state="failed", error=str(error))
                write_piece(the_lake, hour, failed)
                if error.status in (401, 403, 404):
                    raise dg.Failure(f"CloudZero refused the upload of {key}: {error}") from None
                context.log.error(f"{key} not delivered: {error}")
                context.add_asset_metadata(
                    {**_delivery_metadata(failed), "error": str(error)}, partition_key=key
                )
                continue
            done = replace(
                ahead,
                state=done_state,
                written_at=datetime.now(UTC),
                drop_ids=receipt.drop_ids,
                chunks=receipt.chunks,
                bytes=receipt.bytes,
                requests=receipt.requests,
                attempts=receipt.attempts,
                body_sha256=receipt.body_sha256,
            )
            write_piece(the_lake, hour, done)
            context.add_asset_metadata(_delivery_metadata(done), partition_key=key)
    finally:
        if client is not None:
            client.close()
    return dg.MaterializeResult()
