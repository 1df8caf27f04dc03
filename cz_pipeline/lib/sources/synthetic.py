"""Seeded synthetic LiteLLM traffic as a source: the demo's and the tests' LiteLLM."""

from __future__ import annotations

from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.sources.base import Extraction
from cz_pipeline.lib.synthetic import generate_extract


class SyntheticSource:
    """Generates each hour on demand; the same seed always yields the same rows."""

    name = "synthetic"

    def __init__(self, rows_per_hour: int, seed: int = 0) -> None:
        self.rows_per_hour = rows_per_hour
        self.seed = seed

    def extract(self, window: HourWindow) -> Extraction:
        batches = (
            batch
            for hour in window.hours()
            for batch in generate_extract(
                HourWindow.for_hour(hour), self.rows_per_hour, self.seed
            ).to_batches()
        )
        note = f"synthetic traffic, about {self.rows_per_hour} rows per hour, seed {self.seed}"
        return Extraction(batches, [note])
