"""Small bridges from lib types to Dagster metadata."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.spend_log_schema import is_required


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=(field.metadata or {}).get(b"description", b"").decode() or None,
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
