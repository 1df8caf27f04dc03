"""CBF aggregation + body serialization: ``bench_cbf.run`` and the same on the extracted hour.

``bench_cbf.run(rows, repeats=1)`` is called ``repeat`` times (it builds its own synthetic lake
hour with ~6,000 grain combinations and keeps its cost-conservation assertion); each call's
numbers are one repetition. When the extraction benchmark kept its lake, the same two steps
(``build_line_items`` + ``render_bodies``) are also timed on that real hour.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq

from bench.bench_cbf import run as bench_cbf_run
from cz_pipeline.lib.cbf import DEFAULT_GRAIN, build_line_items
from cz_pipeline.lib.cloudzero import render_bodies
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
    }


def measure_bench_cbf(rows: int, repeat: int) -> dict[str, Any]:
    runs = [bench_cbf_run(rows, repeats=1) for _ in range(repeat)]
    return {
        "source": "bench/bench_cbf.py synthetic hour",
        "rows": rows,
        "line_items": runs[-1]["line_items"],
        "bodies": runs[-1]["bodies"],
        "body_bytes": runs[-1]["body_bytes"],
        "runs": runs,
        "build": _spread([float(r["build_s"]) for r in runs]),
        "render": _spread([float(r["render_s"]) for r in runs]),
        "total": _spread([float(r["total_s"]) for r in runs]),
    }


def measure_lake_hour(lake_root: str, hour: datetime, repeat: int) -> dict[str, Any]:
    """build_line_items + render_bodies on the hour our extraction wrote."""
    lake = Lake(lake_root)
    path = lake.hour_file(SPEND_LOGS_DATASET, HourWindow.for_hour(hour).start)
    table = pq.read_table(path)
    build_s: list[float] = []
    render_s: list[float] = []
    items = build_line_items(table, DEFAULT_GRAIN)
    bodies = render_bodies(hour, items)  # warm-up
    for _ in range(repeat):
        started = time.perf_counter()
        items = build_line_items(table, DEFAULT_GRAIN)
        built = time.perf_counter()
        bodies = render_bodies(hour, items)
        build_s.append(built - started)
        render_s.append(time.perf_counter() - built)
    return {
        "source": "the extracted hour (lake Parquet)",
        "rows": table.num_rows,
        "line_items": items.num_rows,
        "bodies": len(bodies),
        "body_bytes": sum(len(b) for b in bodies),
        "build": _spread(build_s),
        "render": _spread(render_s),
        "total": _spread([b + r for b, r in zip(build_s, render_s, strict=True)]),
    }
