"""The spend-log lake: LiteLLM's requests of each UTC hour as typed, privacy-safe Parquet."""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg

from cz_pipeline.defs.check_results import log_hour_verdicts, not_evaluated
from cz_pipeline.defs.metadata import column_schema, hour_check_specs, run_window, spend_metadata
from cz_pipeline.defs.partitions import hourly_partitions
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.defs.scale_out import hourly_backfill_policy
from cz_pipeline.lib import checks
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, HourSummary, extract_to_lake
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

SPEND_LOGS = dg.AssetKey(SPEND_LOGS_DATASET)
SPEND_LOGS_DESCRIPTION = """LiteLLM spend logs of each UTC hour, normalized into one zstd Parquet
file per hour.

One query reads the run's whole range of hours; prompts, responses and IPs are never read.
Files live at `<CZ_LAKE_URL>/litellm_spend_logs/date=YYYY-MM-DD/hour=HH/`. An hour that fails a
blocking check goes to `litellm_spend_logs_quarantine` instead and is held back from CloudZero;
the other hours go on. Each hour's check verdicts are on that hour's partition."""

HOUR_CHECKS_SUMMARY = """The hour's rows, judged once per hour on the hour's partition: failed
if any rule below failed, ERROR when the rule holds the hour back from CloudZero (every rule but
`unpriced_traffic`), WARN otherwise. The evaluation's `rules` table gives each rule's verdict,
reason and offending request ids."""

HOUR_CHECK_RULES = {
    checks.REQUIRED_FIELDS: "request_id, start_time, spend and token counts are present and "
    "typed as the lake schema says. A failing hour is held back from CloudZero.",
    checks.START_TIME_IN_HOUR: "Every row's start_time lies inside its hour [h, h+1). "
    "A failing hour is held back from CloudZero.",
    checks.REQUEST_ID_UNIQUE: "No request_id appears twice within the hour; duplicates are "
    "listed, not dropped. A failing hour is held back from CloudZero.",
    checks.SPEND_AND_TOKENS_VALID: "spend is finite and >= 0, token counts are >= 0. "
    "A failing hour is held back from CloudZero.",
    checks.VALUES_READABLE: "Every row's metadata is a JSON object and its cost and token "
    "fields are numbers in range. A row that is not is kept, with the field and value in its "
    "row_problems column, and its hour is held back from CloudZero; the other hours go on.",
    checks.MATCHES_SOURCE: "The hour's row count and exact sum of spend equal what LiteLLM holds "
    "for that hour in the same database snapshot (one aggregate query per run). A failing hour "
    "is held back from CloudZero.",
    checks.UNPRICED_TRAFFIC: "Warns when the share of successful requests with tokens but zero "
    "spend exceeds CZ_UNPRICED_SHARE_THRESHOLD: LiteLLM prices unknown models at 0.",
}


def _hour_metadata(summary: HourSummary, lake_path: str, snapshot: datetime) -> dict[str, Any]:
    failed = [o.check for o in summary.outcomes if not o.passed]
    return {
        "dagster/row_count": summary.rows,
        **spend_metadata(summary.exact_spend),
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
        "failed_requests": summary.failures,
        "distinct_models": len(summary.models),
        "path": dg.MetadataValue.path(lake_path),
        "file_bytes": summary.bytes,
        "held_back": summary.held_back,
        "failed_checks": ", ".join(failed),
        "snapshot": snapshot.isoformat(),
        "not_evaluated": not_evaluated(summary.outcomes),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SPEND_LOGS,
            description=SPEND_LOGS_DESCRIPTION,
            group_name="litellm",
            owners=["team:finops-data"],
            kinds={"python", "parquet"},
            metadata={"dagster/column_schema": column_schema(LAKE_SCHEMA)},
            code_version="2",
        )
    ],
    name=SPEND_LOGS_DATASET,
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill_policy,
    check_specs=hour_check_specs(SPEND_LOGS, HOUR_CHECKS_SUMMARY, HOUR_CHECK_RULES),
    # Makes the check output optional: each hour's verdict is logged as its own evaluation.
    can_subset=True,
)
def litellm_spend_logs(
    context: dg.AssetExecutionContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> Iterator[dg.MaterializeResult]:
    window = run_window(context)
    source = spend_log_source.build()
    the_lake = lake.build()
    context.log.info(f"extracting {window} from the {source.name} source")
    extraction = source.extract(window)
    summaries = extract_to_lake(
        extraction,
        window,
        the_lake,
        settings=check_thresholds.hour_check_settings(),
        source=source.name,
    )
    for note in extraction.notes:
        context.log.info(note)
    for summary in summaries:
        if summary.stale is not None:
            context.log.warning(f"{summary.partition_key} {summary.stale}")
            context.add_asset_metadata(
                {"stale": summary.stale, "snapshot": extraction.snapshot.isoformat()},
                partition_key=summary.partition_key,
            )
            continue
        context.add_asset_metadata(
            _hour_metadata(summary, the_lake.display_path(summary.path), extraction.snapshot),
            partition_key=summary.partition_key,
        )
        for outcome in summary.outcomes:
            if outcome.blocking:
                context.log.error(f"held back: {outcome.check}: {outcome.reason}")
    total_rows = sum(s.rows for s in summaries)
    held = [s.partition_key for s in summaries if s.held_back and s.stale is None]
    context.log.info(
        f"wrote {len(summaries)} hours, {total_rows:,} requests to {the_lake.url}"
        + (f"; held back: {', '.join(held)}" if held else "")
    )
    # A stale hour's file was discarded, so its verdicts judged nothing that stands.
    fresh = (o for s in summaries if s.stale is None for o in s.outcomes)
    log_hour_verdicts(context, SPEND_LOGS, fresh)
    yield dg.MaterializeResult(asset_key=SPEND_LOGS)
