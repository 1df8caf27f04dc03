"""The spend-log lake: LiteLLM's requests of each UTC hour as typed, privacy-safe Parquet."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from cz_pipeline.defs.check_results import check_result
from cz_pipeline.defs.metadata import column_schema, run_window
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

HOUR_CHECK_DESCRIPTIONS = {
    checks.REQUIRED_FIELDS: "request_id, start_time, spend and token counts are present and "
    "typed as the lake schema says. A failing hour is held back from CloudZero.",
    checks.START_TIME_IN_HOUR: "Every row's start_time lies inside its hour [h, h+1). "
    "A failing hour is held back from CloudZero.",
    checks.REQUEST_ID_UNIQUE: "No request_id appears twice within the hour; duplicates are "
    "listed, not dropped. A failing hour is held back from CloudZero.",
    checks.SPEND_AND_TOKENS_VALID: "spend is finite and >= 0, token counts are >= 0. "
    "A failing hour is held back from CloudZero.",
    checks.MATCHES_SOURCE: "The hour's row count and exact sum of spend equal what LiteLLM holds "
    "for that hour in the same database snapshot (one aggregate query per run). A failing hour "
    "is held back from CloudZero.",
    checks.UNPRICED_TRAFFIC: "Warns when the share of successful requests with tokens but zero "
    "spend exceeds CZ_UNPRICED_SHARE_THRESHOLD: LiteLLM prices unknown models at 0.",
}


def _hour_metadata(summary: HourSummary, lake_path: str) -> dict[str, Any]:
    failed = [o.check for o in summary.outcomes if not o.passed]
    return {
        "dagster/row_count": summary.rows,
        "spend_usd": summary.spend,
        "spend_exact": str(summary.exact_spend),
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
        "failed_requests": summary.failures,
        "distinct_models": len(summary.models),
        "path": dg.MetadataValue.path(lake_path),
        "file_bytes": summary.bytes,
        "held_back": summary.held_back,
        "failed_checks": ", ".join(failed),
    }


def _check_results(summaries: Sequence[HourSummary]) -> list[dg.AssetCheckResult]:
    by_check: dict[str, list[checks.CheckOutcome]] = {name: [] for name in checks.HOUR_CHECKS}
    for summary in summaries:
        for outcome in summary.outcomes:
            by_check[outcome.check].append(outcome)
    return [check_result(name, outcomes) for name, outcomes in by_check.items()]


@dg.asset(
    name=SPEND_LOGS_DATASET,
    group_name="litellm",
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill_policy,
    owners=["team:finops-data"],
    kinds={"python", "parquet"},
    metadata={"dagster/column_schema": column_schema(LAKE_SCHEMA)},
    check_specs=[
        dg.AssetCheckSpec(name, asset=SPEND_LOGS_DATASET, description=description)
        for name, description in HOUR_CHECK_DESCRIPTIONS.items()
    ],
    code_version="2",
)
def litellm_spend_logs(
    context: dg.AssetExecutionContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
    check_thresholds: CheckThresholdsResource,
) -> dg.MaterializeResult:
    """LiteLLM spend logs of each UTC hour, normalized into one zstd Parquet file per hour.

    One query reads the run's whole range of hours; prompts, responses and IPs are never read.
    Files live at ``<CZ_LAKE_URL>/litellm_spend_logs/date=YYYY-MM-DD/hour=HH/``. An hour that
    fails a blocking check goes to ``litellm_spend_logs_quarantine`` instead and is held back
    from CloudZero; the other hours go on.
    """
    window = run_window(context)
    source = spend_log_source.build()
    the_lake = lake.build()
    context.log.info(f"extracting {window} from the {source.name} source")
    extraction = source.extract(window)
    summaries = extract_to_lake(
        extraction, window, the_lake, settings=check_thresholds.hour_check_settings()
    )
    for note in extraction.notes:
        context.log.info(note)
    for summary in summaries:
        context.add_asset_metadata(
            _hour_metadata(summary, the_lake.display_path(summary.path)),
            partition_key=summary.partition_key,
        )
        for outcome in summary.outcomes:
            if outcome.blocking:
                context.log.error(f"held back: {outcome.check}: {outcome.reason}")
    total_rows = sum(s.rows for s in summaries)
    held = [s.partition_key for s in summaries if s.held_back]
    context.log.info(
        f"wrote {len(summaries)} hours, {total_rows:,} requests to {the_lake.url}"
        + (f"; held back: {', '.join(held)}" if held else "")
    )
    return dg.MaterializeResult(check_results=_check_results(summaries))
