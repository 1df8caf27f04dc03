"""Stream an extraction into the lake, one file per UTC hour, in bounded memory.

Sources yield batches ascending by ``start_time``; each batch is normalized, cut at hour
boundaries and appended to that hour's file, so no more than a batch is held at once whatever
the hour's volume. Every hour of the window gets a file, empty hours included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.hours import HourWindow, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.normalize import AliasLookup, normalize
from cz_pipeline.lib.sources.base import Extraction, SourceError
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

SPEND_LOGS_DATASET = "litellm_spend_logs"
_MS_PER_HOUR = 3_600_000


@dataclass
class HourSummary:
    """What one hour of spend logs holds; becomes that partition's materialization metadata."""

    hour: datetime
    rows: int = 0
    spend: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    failures: int = 0
    models: set[str] = field(default_factory=set)
    path: str = ""
    bytes: int = 0

    @property
    def partition_key(self) -> str:
        return partition_key(self.hour)

    def add(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        self.rows += rows.num_rows
        self.spend += float(pc.sum(rows["spend"]).as_py() or 0.0)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            setattr(self, name, getattr(self, name) + int(pc.sum(rows[name]).as_py() or 0))
        self.failures += int(pc.sum(pc.equal(rows["status"], "failure")).as_py() or 0)
        self.models.update(m for m in pc.unique(rows["model"]).to_pylist() if m is not None)


def _hour_offsets(start_times: pa.ChunkedArray, window: HourWindow) -> np.ndarray:
    epoch_ms = start_times.cast(pa.int64()).to_numpy()
    return (epoch_ms - int(window.start.timestamp() * 1000)) // _MS_PER_HOUR


def _split_by_hour(
    batches: Iterator[pa.RecordBatch], window: HourWindow, aliases: AliasLookup | None
) -> Iterator[tuple[int, pa.Table]]:
    """Yield (hour offset in the window, normalized rows of that hour), offsets never decreasing."""
    hours_in_window = len(list(window.hours()))
    current = 0
    for batch in batches:
        rows = normalize(batch, aliases)
        if not rows.num_rows:
            continue
        offsets = _hour_offsets(rows["start_time"], window)
        outside = np.flatnonzero((offsets < 0) | (offsets >= hours_in_window))
        if outside.size:
            row = rows.slice(int(outside[0]), 1).to_pylist()[0]
            raise SourceError(
                f"source returned {outside.size} row(s) outside {window}, e.g. request_id "
                f"{row['request_id']!r} at {row['start_time']:%Y-%m-%d %H:%M:%S.%f}"
            )
        if offsets[0] < current or np.any(np.diff(offsets) < 0):
            raise SourceError(
                f"source returned rows out of start_time order in {window}; "
                "every source must yield ascending start_time"
            )
        for offset in np.unique(offsets):
            first, last = np.searchsorted(offsets, [offset, offset + 1])
            yield int(offset), rows.slice(int(first), int(last - first))
        current = int(offsets[-1])


def extract_to_lake(
    extraction: Extraction,
    window: HourWindow,
    lake: Lake,
    dataset: str = SPEND_LOGS_DATASET,
) -> list[HourSummary]:
    """Write every hour of ``window`` to the lake and summarize each one."""
    hours = list(window.hours())
    summaries = [HourSummary(hour) for hour in hours]
    pieces = _split_by_hour(extraction.batches, window, extraction.aliases)
    pending = next(pieces, None)
    for offset, hour in enumerate(hours):
        summary = summaries[offset]
        with lake.hour_writer(dataset, hour, LAKE_SCHEMA) as writer:
            while pending is not None and pending[0] == offset:
                writer.write(pending[1])
                summary.add(pending[1])
                pending = next(pieces, None)
        summary.path = lake.hour_file(dataset, hour)
        summary.bytes = lake.file_size(summary.path)
    return summaries
