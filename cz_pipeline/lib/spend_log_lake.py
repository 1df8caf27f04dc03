"""Stream an extraction into the lake, one checked file per UTC hour, in bounded memory.

Sources yield batches ascending by ``start_time``; each batch is normalized, cut at hour
boundaries, checked and appended to that hour's temporary file, so no more than a batch is held
at once whatever the hour's volume. When the hour is complete its checks decide where the file
goes: into the lake, or, if a blocking check failed, into ``<dataset>_quarantine`` with the
reasons, leaving the lake's previous file untouched. Either way the hour's status file says so,
and later assets only take hours whose status passed. Nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.checks import CheckOutcome, HourChecker, SourceTotals, held_back
from cz_pipeline.lib.hours import HourWindow, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.normalize import AliasLookup, normalize
from cz_pipeline.lib.sources.base import Extraction
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

SPEND_LOGS_DATASET = "litellm_spend_logs"
STATUS_FILE = "_status.json"
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


def hour_status(summary: HourSummary, now: datetime | None = None) -> dict[str, Any]:
    """The hour's status file: whether later assets may take it, and why not."""
    return {
        "hour": partition_key(summary.hour),
        "held_back": summary.held_back,
        "rows": summary.rows,
        "spend": str(summary.exact_spend),
        "written_at": (now or datetime.now(UTC)).isoformat(),
        "failed_checks": [
            {
                "check": outcome.check,
                "severity": outcome.severity,
                "reason": outcome.reason,
                "offending_request_ids": list(outcome.offending_request_ids),
            }
            for outcome in summary.outcomes
            if not outcome.passed
        ],
    }


def read_hour_status(lake: Lake, dataset: str, hour: datetime) -> dict[str, Any] | None:
    status: dict[str, Any] | None = lake.read_json(dataset, hour, STATUS_FILE)
    return status


def materialized_totals(
    lake: Lake, window: HourWindow, dataset: str = SPEND_LOGS_DATASET
) -> dict[datetime, SourceTotals]:
    """Rows and exact spend of each hour as last materialized, from the status files."""
    totals = {}
    for hour in window.hours():
        status = read_hour_status(lake, dataset, hour)
        if status is not None:
            totals[hour] = SourceTotals(int(status["rows"]), Decimal(status["spend"]))
    return totals


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
) -> list[HourSummary]:
    """Write every hour of ``window`` to the lake (or quarantine), checked and summarized.

    The extraction is closed however this ends, so a failed write never leaves the source's
    connection or reader thread behind.
    """
    try:
        return _write_hours(extraction, window, lake, dataset, settings)
    finally:
        extraction.close()


def _write_hours(
    extraction: Extraction,
    window: HourWindow,
    lake: Lake,
    dataset: str,
    settings: CheckSettings | None,
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
            if summary.held_back:
                writer.destination = quarantine_dataset(dataset)
        summary.path = lake.hour_file(dataset, hour).replace(
            lake.hour_folder(dataset, hour), lake.hour_folder(writer.destination, hour)
        )
        summary.bytes = lake.file_size(summary.path)
        lake.write_json(dataset, hour, STATUS_FILE, hour_status(summary))
    return summaries
