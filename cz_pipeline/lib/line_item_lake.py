"""What the line-item checks need from beyond the run's hours, merged on read from per-hour data.

Nothing here is a lake-wide file that runs rewrite: the tags already given to each resource come
from the line-item hours in the lake themselves, and a month's line-item counts from the hours'
records. Two overlapping runs therefore never overwrite each other's entries.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from datetime import datetime

import pyarrow as pa
import pyarrow.dataset as ds

from cz_pipeline.lib.cbf_checks import RESOURCE_ID
from cz_pipeline.lib.hour_record import HourRecord
from cz_pipeline.lib.lake import Lake

LINE_ITEMS_DATASET = "cloudzero_line_items"


def known_tags(lake: Lake, tag_columns: list[str], skip: Iterable[datetime]) -> pa.Table:
    """``resource/id`` and its first-seen value of each tag, over the lake's line-item hours.

    Reads only those columns; hours in ``skip`` (the run's own, being rebuilt) are left out.
    A file without a tag column reads it as null.
    """
    skipped = {lake.hour_folder(LINE_ITEMS_DATASET, hour) for hour in skip}
    pattern = f"{lake.root}/{LINE_ITEMS_DATASET}/date=*/hour=*/{LINE_ITEMS_DATASET}.parquet"
    files = [p for p in lake.glob(pattern) if posixpath.dirname(p) not in skipped]
    schema = pa.schema([pa.field(name, pa.string()) for name in [RESOURCE_ID, *tag_columns]])
    if not files:
        return schema.empty_table()
    # Files sort by date and hour; a single-threaded group-by keeps each resource's first row.
    rows = ds.dataset(files, schema=schema, format="parquet", filesystem=lake.fs).to_table()
    first = rows.group_by(RESOURCE_ID, use_threads=False).aggregate(
        [(name, "first") for name in tag_columns]
    )
    return first.rename_columns([*tag_columns, RESOURCE_ID]).select(schema.names)


def month_line_item_counts(records: Mapping[datetime, HourRecord]) -> dict[datetime, int]:
    """Line items of each hour whose line items were built, from the hours' records."""
    return {
        hour: record.line_items.rows
        for hour, record in records.items()
        if record.line_items is not None and not record.line_items.held_because
    }
