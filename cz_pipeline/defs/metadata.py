"""Small bridges from lib types to Dagster metadata."""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import dagster as dg
import pyarrow as pa

from cz_pipeline.defs.check_results import HOUR_CHECKS
from cz_pipeline.defs.partitions import hourly_partitions
from cz_pipeline.lib.checks import plain_decimal
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.spend_log_schema import is_required

# Spend in metadata: a float a reader can take in at a glance, the exact sum beside it as text.
SPEND_DISPLAY_DECIMALS = 6


_CODE_SPAN = re.compile(r"(`[^`]*`)")


def markdown_text(text: str) -> str:
    """Text that Dagster's UI renders as Markdown shown as written: ``<team_id>`` is not HTML.

    Code spans already show their text literally (an entity there would print as ``&lt;``), so
    only the text around them is escaped.
    """
    return "".join(
        part if _CODE_SPAN.fullmatch(part) else html.escape(part, quote=False)
        for part in _CODE_SPAN.split(text)
    )


def spend_metadata(exact: Decimal) -> dict[str, Any]:
    return {
        "spend_usd": dg.MetadataValue.float(round(float(exact), SPEND_DISPLAY_DECIMALS)),
        "spend_exact": plain_decimal(exact),
    }


def hour_check_specs(
    asset: dg.AssetKey, summary: str, rules: Mapping[str, str]
) -> list[dg.AssetCheckSpec]:
    """The asset's one check judged per hour (partitioned like the asset), with its rules."""
    listed = "\n".join(f"- `{name}`: {markdown_text(text)}" for name, text in rules.items())
    with warnings.catch_warnings():
        # Partitioned checks are marked preview in Dagster 1.13; the README says why we use them.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                HOUR_CHECKS,
                asset=asset,
                description=f"{summary}\n\n{listed}",
                partitions_def=hourly_partitions,
            )
        ]


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=markdown_text((field.metadata or {}).get(b"description", b"").decode())
                or None,
                constraints=dg.TableColumnConstraints(nullable=not is_required(field)),
            )
            for field in schema
        ]
    )


def run_window(context: dg.AssetExecutionContext) -> HourWindow:
    """The whole partition range of this run as one window: one query, not one per hour."""
    key_range = context.partition_key_range
    partitions = context.assets_def.partitions_def
    assert partitions is not None
    for key in (key_range.start, key_range.end):
        if not partitions.has_partition_key(key):
            raise dg.Failure(
                f"{key} is not an hour this pipeline can materialize: hours run from "
                f"CZ_PARTITIONS_START to the last complete UTC hour"
            )
    return HourWindow.from_partition_keys(key_range.start, key_range.end)


def check_partition_keys(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The hours a check run judges: the run's range, or its single hour."""
    if context.has_partition_key_range or context.has_partition_key:
        return list(context.partition_keys)
    return []
