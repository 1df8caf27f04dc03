"""A crash mid-write leaves a temporary file; the hour's next write removes it, not a live one."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from cz_pipeline.lib.lake import STALE_TEMPORARY_AFTER, Lake

HOUR = datetime(2026, 11, 30, 23, tzinfo=UTC)


def _leftover(folder: Path, name: str, age_seconds: float) -> Path:
    """A temporary file as a killed writer leaves it, last written ``age_seconds`` ago."""
    path = folder / f".{name}.{'ab' * 16}{int(age_seconds)}.tmp"
    path.write_bytes(b"PAR1 half a file")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_the_next_write_of_an_hour_removes_its_stale_temporaries_only(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    folder = Path(lake.hour_folder("things", HOUR))
    folder.mkdir(parents=True)
    stale = STALE_TEMPORARY_AFTER.total_seconds()
    crashed = _leftover(folder, "things.parquet", age_seconds=stale + 60)
    growing = _leftover(folder, "things.parquet", age_seconds=1)  # a concurrent writer's
    other_file = _leftover(folder, "receipt.json", age_seconds=stale + 60)

    lake.write_hour("things", HOUR, pa.table({"a": [1]}))

    assert not crashed.exists()
    assert growing.exists()
    assert other_file.exists()  # another file's leftovers go with that file's next write
    lake.write_bytes("things", HOUR, "receipt.json", b"{}")
    assert not other_file.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [growing.name, "receipt.json", "things.parquet"]
    )
