"""The contract every spend-log source fulfils."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.normalize import AliasLookup


class SourceError(RuntimeError):
    """The source could not be read; the message says why and never carries a secret."""


@dataclass
class Extraction:
    """Batches in ``EXTRACT_SCHEMA``, ascending by ``start_time``, plus what to tell the user.

    ``batches`` is consumed once; ``notes`` may grow while it is consumed (pages read, ...).
    ``aliases`` fills key and team aliases that the rows' metadata lacks.
    """

    batches: Iterator[pa.RecordBatch]
    notes: list[str] = field(default_factory=list)
    aliases: AliasLookup | None = None


class SpendLogSource(Protocol):
    """Reads LiteLLM spend logs for a window of whole UTC hours."""

    name: str

    def extract(self, window: HourWindow) -> Extraction: ...
