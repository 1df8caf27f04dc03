"""The spend-log lake: LiteLLM's requests of each UTC hour as typed, privacy-safe Parquet."""

from typing import Any

import dagster as dg

from cz_pipeline.defs.metadata import column_schema, run_window
from cz_pipeline.defs.partitions import hourly_partitions
from cz_pipeline.defs.resources import LakeResource, SpendLogSourceResource
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET, HourSummary, extract_to_lake
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA


def _hour_metadata(summary: HourSummary, lake_path: str) -> dict[str, Any]:
    return {
        "dagster/row_count": summary.rows,
        "spend_usd": summary.spend,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
        "failed_requests": summary.failures,
        "distinct_models": len(summary.models),
        "path": dg.MetadataValue.path(lake_path),
        "file_bytes": summary.bytes,
    }


@dg.asset(
    name=SPEND_LOGS_DATASET,
    group_name="litellm",
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    owners=["team:finops-data"],
    kinds={"python", "parquet"},
    metadata={"dagster/column_schema": column_schema(LAKE_SCHEMA)},
    code_version="1",
)
def litellm_spend_logs(
    context: dg.AssetExecutionContext,
    spend_log_source: SpendLogSourceResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    """LiteLLM spend logs of each UTC hour, normalized into one zstd Parquet file per hour.

    One query reads the run's whole range of hours; prompts, responses and IPs are never read.
    Files live at ``<CZ_LAKE_URL>/litellm_spend_logs/date=YYYY-MM-DD/hour=HH/``.
    """
    window = run_window(context)
    source = spend_log_source.build()
    the_lake = lake.build()
    context.log.info(f"extracting {window} from the {source.name} source")
    extraction = source.extract(window)
    summaries = extract_to_lake(extraction, window, the_lake)
    for note in extraction.notes:
        context.log.info(note)
    for summary in summaries:
        context.add_asset_metadata(
            _hour_metadata(summary, the_lake.display_path(summary.path)),
            partition_key=summary.partition_key,
        )
    total_rows = sum(s.rows for s in summaries)
    context.log.info(f"wrote {len(summaries)} hours, {total_rows:,} requests to {the_lake.url}")
    return dg.MaterializeResult()
