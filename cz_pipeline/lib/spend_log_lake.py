"""Stream an extraction into the lake, one checked file per UTC hour, in bounded memory.

Sources yield batches ascending by ``start_time``; each batch is normalized, cut at hour
boundaries, checked and appended to that hour's temporary file, so no more than a batch is held
at once whatever the hour's volume. When the hour is complete its checks decide where the file
goes: into the lake, or, if a blocking check failed, into ``<dataset>_quarantine`` with the
reasons, leaving the lake's previous file untouched. Either way the hour's record says so
(:mod:`cz_pipeline.lib.hour_record`), and later assets only take hours whose checks passed.
Nothing is dropped. A read older than the hour already in the lake (an overlapping run read
LiteLLM later) is discarded, so the newer snapshot wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.checks import CheckOutcome, HourChecker, SourceTotals, held_back
from cz_pipeline.lib.hour_record import (
    SpendLogPiece,
    Verdict,
    newer_snapshot,
    read_record,
    write_piece,
)
from cz_pipeline.lib.hours import HourWindow, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.normalize import AliasLookup, normalize
from cz_pipeline.lib.sources.base import Extraction
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

SPEND_LOGS_DATASET = "litellm_spend_logs"
_MS_PER_HOUR = 3_600_000


def quarantine_dataset(dataset: str) -> str:
    return f"{dataset}_quarantine"


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
    outcomes: list[CheckOutcome] = field(default_factory=list)
    exact_spend: Decimal = Decimal(0)
    stale: str | None = None

    @property
    def partition_key(self) -> str:
        return partition_key(self.hour)

    @property
    def held_back(self) -> bool:
        return held_back(self.outcomes)

    def add(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        self.rows += rows.num_rows
        self.spend += float(pc.sum(rows["spend"]).as_py() or 0.0)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            setattr(self, name, getattr(self, name) + int(pc.sum(rows[name]).as_py() or 0))
        self.failures += int(pc.sum(pc.equal(rows["status"], "failure")).as_py() or 0)
        self.models.update(m for m in pc.unique(rows["model"]).to_pylist() if m is not None)


def _hour_offsets(start_times: pa.ChunkedArray, window: HourWindow, hours: int) -> np.ndarray:
    """Each row's hour within the window; rows outside it are kept with the nearest edge hour,
    where the ``start_time_in_hour`` check holds that hour back and names them."""
    epoch_ms = start_times.cast(pa.int64()).to_numpy(zero_copy_only=False)
    offsets = (epoch_ms - int(window.start.timestamp() * 1000)) // _MS_PER_HOUR
    return np.clip(offsets, 0, hours - 1)


def _split_by_hour(
    batches: Iterator[pa.RecordBatch], window: HourWindow, aliases: AliasLookup | None
) -> Iterator[tuple[int, pa.Table]]:
    """Yield (hour offset in the window, normalized rows of that hour), offsets never decreasing.

    A row whose start_time belongs to an hour already passed stays with the hour it arrived in,
    whose ``start_time_in_hour`` check then holds that hour back and names it: a source that
    misorders rows loses nothing and is caught.
    """
    hours_in_window = len(list(window.hours()))
    current = 0
    for batch in batches:
        rows = normalize(batch, aliases)
        if not rows.num_rows:
            continue
        if rows["start_time"].null_count:
            offsets = np.full(rows.num_rows, current)
        else:
            offsets = _hour_offsets(rows["start_time"], window, hours_in_window)
        offsets = np.maximum.accumulate(np.maximum(offsets, current))
        for offset in np.unique(offsets):
            first, last = np.searchsorted(offsets, [offset, offset + 1])
            yield int(offset), rows.slice(int(first), int(last - first))
        current = int(offsets[-1])


@dataclass(frozen=True)
class CheckSettings:
    spend_tolerance: Decimal = Decimal("1e-9")
    unpriced_share_threshold: float = 0.01


def extract_to_lake(
    extraction: Extraction,
    window: HourWindow,
    lake: Lake,
    dataset: str = SPEND_LOGS_DATASET,
    settings: CheckSettings | None = None,
    *,
    source: str,
) -> list[HourSummary]:
    """Write every hour of ``window`` to the lake (or quarantine), checked and summarized.

    Each hour's spend-log piece of its record is written after its file. An hour whose record
    already holds a newer snapshot than ``extraction``'s is left as it is (``summary.stale``).
    The extraction is closed however this ends, so a failed write never leaves the source's
    connection or reader thread behind.
    """
    try:
        return _write_hours(extraction, window, lake, dataset, settings, source)
    finally:
        extraction.close()


def _write_hours(
    extraction: Extraction,
    window: HourWindow,
    lake: Lake,
    dataset: str,
    settings: CheckSettings | None,
    source: str,
) -> list[HourSummary]:
    settings = settings or CheckSettings()
    hours = list(window.hours())
    summaries = [HourSummary(hour) for hour in hours]
    checkers = [
        HourChecker(
            hour,
            spend_tolerance=settings.spend_tolerance,
            unpriced_share_threshold=settings.unpriced_share_threshold,
        )
        for hour in hours
    ]
    pieces = _split_by_hour(extraction.batches, window, extraction.aliases)
    pending = next(pieces, None)
    for offset, hour in enumerate(hours):
        summary, checker = summaries[offset], checkers[offset]
        with lake.hour_writer(dataset, hour, LAKE_SCHEMA) as writer:
            while pending is not None and pending[0] == offset:
                writer.write(pending[1])
                summary.add(pending[1])
                checker.add(pending[1])
                pending = next(pieces, None)
            if extraction.source_totals is None:
                summary.outcomes = checker.finish(None, extraction.no_totals_reason)
            else:
                empty = SourceTotals(0, Decimal(0))
                summary.outcomes = checker.finish(extraction.source_totals.get(hour, empty))
            summary.exact_spend = checker.lake_totals.spend
            existing = read_record(lake, hour).spend_logs
            summary.stale = newer_snapshot(existing, extraction.snapshot)
            if summary.stale is not None:
                writer.destination = None
            elif summary.held_back:
                writer.destination = quarantine_dataset(dataset)
        if summary.stale is not None:
            continue
        destination = writer.destination or dataset
        summary.path = lake.hour_file(dataset, hour).replace(
            lake.hour_folder(dataset, hour), lake.hour_folder(destination, hour)
        )
        summary.bytes = lake.file_size(summary.path)
        write_piece(
            lake,
            hour,
            SpendLogPiece(
                source=source,
                snapshot=extraction.snapshot,
                extracted_at=datetime.now(UTC),
                rows=summary.rows,
                spend=summary.exact_spend,
                held_back=summary.held_back,
                verdicts=tuple(Verdict.of(outcome) for outcome in summary.outcomes),
            ),
        )
    return summaries
