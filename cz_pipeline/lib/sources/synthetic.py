"""Seeded synthetic LiteLLM traffic as a source: the demo's and the tests' LiteLLM."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa

from cz_pipeline.lib.checks import SourceTotals
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.money import money_sum
from cz_pipeline.lib.sources.base import Extraction
from cz_pipeline.lib.synthetic import generate_extract


class SyntheticSource:
    """Generates each hour on demand; the same seed always yields the same rows."""

    name = "synthetic"

    def __init__(self, rows_per_hour: int, seed: int = 0) -> None:
        self.rows_per_hour = rows_per_hour
        self.seed = seed

    def extract(self, window: HourWindow) -> Extraction:
        totals: dict[datetime, SourceTotals] = {}
        note = f"synthetic traffic, about {self.rows_per_hour} rows per hour, seed {self.seed}"
        return Extraction(
            self._batches(window, totals), [note], source_totals=totals, snapshot=datetime.now(UTC)
        )

    def hourly_totals(self, window: HourWindow) -> dict[datetime, SourceTotals]:
        totals: dict[datetime, SourceTotals] = {}
        for _ in self._batches(window, totals):
            pass
        return totals

    def _batches(
        self, window: HourWindow, totals: dict[datetime, SourceTotals]
    ) -> Iterator[pa.RecordBatch]:
        """Generate hour by hour, recording each hour's totals before yielding its rows."""
        for hour in window.hours():
            table = generate_extract(HourWindow.for_hour(hour), self.rows_per_hour, self.seed)
            totals[hour] = SourceTotals(table.num_rows, money_sum(table["spend"]))
            yield from table.to_batches()
