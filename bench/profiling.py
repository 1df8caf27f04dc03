"""Where our extraction's time goes: one extra repetition under cProfile, summarised by stage.

ADBC reads inside the batch iterator, so "waiting for batches" is PostgreSQL executing the query
plus ADBC decoding COPY binary into Arrow; the rest is client-side Python/Arrow work.
"""

from __future__ import annotations

import pstats
import tempfile
from pathlib import Path
from typing import Any

from bench.database import LoadedHour
from bench.extract import run_child

# Stage -> (file suffix, function name) whose cumulative time is that stage.
_STAGES: dict[str, tuple[str, str]] = {
    "wait for batches (PostgreSQL + ADBC decode)": ("sources/litellm_postgres.py", "_batches"),
    "source setup (connect, lookups, totals)": ("sources/litellm_postgres.py", "extract"),
    "normalize": ("lib/normalize.py", "normalize"),
    "(of which _split_tags)": ("lib/normalize.py", "_split_tags"),
    "Parquet write (write_table)": ("pyarrow/parquet/core.py", "write_table"),
    "hour checks (HourChecker.add)": ("lib/checks.py", "add"),
    "hour checks (HourChecker.finish)": ("lib/checks.py", "finish"),
    "HourSummary.add": ("lib/spend_log_lake.py", "add"),
    "extract_to_lake total": ("lib/spend_log_lake.py", "extract_to_lake"),
}


def profile_extract(url: str, loaded: LoadedHour, options: tuple[str, ...] = ()) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cz-bench-profile-") as folder:
        stats_path = str(Path(folder) / "extract.prof")
        run = run_child(url, loaded, options, profile=stats_path)
        stats = pstats.Stats(stats_path)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    stages: dict[str, float] = {}
    for stage, (suffix, function) in _STAGES.items():
        cumulative = [
            entry[3]
            for (filename, _, name), entry in raw.items()
            if filename.endswith(suffix) and name == function
        ]
        if cumulative:
            stages[stage] = max(cumulative)
    top = sorted(
        (
            (entry[2], f"{Path(filename).name}:{line}({name})")
            for (filename, line, name), entry in raw.items()
        ),
        reverse=True,
    )[:12]
    return {
        "seconds": run.seconds,
        "stages_s": stages,
        "top_tottime": [{"function": name, "tottime_s": round(t, 3)} for t, name in top],
    }
