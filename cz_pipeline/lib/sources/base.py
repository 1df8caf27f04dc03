"""The contract every spend-log source fulfils."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol, runtime_checkable

import pyarrow as pa

from cz_pipeline.lib.checks import SourceTotals
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.normalize import AliasLookup


class SourceError(RuntimeError):
    """The source could not be read; the message says why and never carries a secret."""


@dataclass
class Extraction:
    """Batches in ``EXTRACT_SCHEMA``, ascending by ``start_time``, plus what to tell the user.

    ``batches`` is consumed once; ``notes`` may grow while it is consumed (pages read, ...).
    ``aliases`` fills key and team aliases that the rows' metadata lacks.
    ``source_totals``, when the source can aggregate, holds LiteLLM's row count and exact spend
    per hour as seen by the same read (for the ``matches_source`` check); an hour's entry is
    present by the time its last batch is yielded, and a missing hour had no rows.
    ``no_totals_reason`` says why a source without totals cannot reconcile.
    ``snapshot`` is when LiteLLM's data was seen (PostgreSQL: the server's clock as the read's
    snapshot was taken; the API: the first request; synthetic: generation). Of two reads of an
    hour, the one with the newer snapshot wins in the lake and in CloudZero.
    """

    batches: Iterator[pa.RecordBatch]
    notes: list[str] = field(default_factory=list)
    aliases: AliasLookup | None = None
    source_totals: Mapping[datetime, SourceTotals] | None = None
    no_totals_reason: str = "the source has no per-hour aggregate to reconcile with"
    snapshot: datetime = field(default_factory=lambda: datetime.now(UTC))

    def close(self) -> None:
        """Stop reading and release what the source holds (a connection, a reader thread);
        whoever consumes ``batches`` calls it when done or failed."""
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()


class SpendLogSource(Protocol):
    """Reads LiteLLM spend logs for a window of whole UTC hours."""

    name: str

    def extract(self, window: HourWindow) -> Extraction: ...


@runtime_checkable
class HourlyTotalsSource(Protocol):
    """A source that can count rows and sum spend per hour cheaply (late-row detection)."""

    def hourly_totals(self, window: HourWindow) -> dict[datetime, SourceTotals]: ...


@runtime_checkable
class DailySpendSource(Protocol):
    """A source that can read LiteLLM's own ``LiteLLM_DailyUserSpend`` table."""

    def daily_user_spend(self, first_day: date, last_day: date) -> pa.Table: ...
