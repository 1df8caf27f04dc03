from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from cz_pipeline.lib.hours import HourWindow, hive_path, parse_partition_key, partition_key
from cz_pipeline.lib.lake import Lake

HOUR = datetime(2026, 11, 30, 23, tzinfo=UTC)


def test_hour_files_use_hive_layout(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    written = lake.write_hour("things", HOUR, pa.table({"a": [1, 2]}))
    assert written.path == f"{tmp_path}/things/date=2026-11-30/hour=23/things.parquet"
    assert written.rows == 2
    assert written.bytes == Path(written.path).stat().st_size
    dataset = ds.dataset(tmp_path / "things", format="parquet", partitioning="hive")
    assert dataset.to_table().column("hour").to_pylist() == [23, 23]


def test_rewriting_an_hour_replaces_it(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_hour("things", HOUR, pa.table({"a": [1, 2]}))
    lake.write_hour("things", HOUR, pa.table({"a": [3]}))
    assert lake.read_hour("things", HOUR).column("a").to_pylist() == [3]


def test_reading_columns_an_hour_lacks_names_them(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_hour("things", HOUR, pa.table({"a": [1], "b": ["x"]}))
    assert lake.read_hour("things", HOUR, columns=["b", "a"]).column_names == ["b", "a"]
    with pytest.raises(ValueError, match=r"things\.parquet has no column zz; its columns: a, b"):
        lake.read_hour("things", HOUR, columns=["a", "zz"])


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_hour("things", HOUR, pa.table({"a": [1, 2]}))

    def fail_halfway() -> None:
        with lake.hour_writer("things", HOUR, pa.schema([("a", pa.int64())])) as writer:
            writer.write(pa.table({"a": [9]}))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_halfway()
    assert lake.read_hour("things", HOUR).column("a").to_pylist() == [1, 2]
    assert sorted(p.name for p in Path(lake.hour_folder("things", HOUR)).iterdir()) == [
        "things.parquet"
    ]


def test_window_hours_and_keys() -> None:
    window = HourWindow.from_partition_keys("2026-11-30-22:00", "2026-12-01-01:00")
    assert [partition_key(h) for h in window.hours()] == [
        "2026-11-30-22:00",
        "2026-11-30-23:00",
        "2026-12-01-00:00",
        "2026-12-01-01:00",
    ]
    assert hive_path(parse_partition_key("2026-12-01-01:00")) == "date=2026-12-01/hour=01"
    assert [str(w) for w in window.split(3)] == [
        "[2026-11-30 22:00, 2026-12-01 00:00) UTC",
        "[2026-12-01 00:00, 2026-12-01 02:00) UTC",
    ]


@pytest.mark.parametrize(
    "moment",
    [datetime(2026, 11, 1, 3, 30, tzinfo=UTC), datetime(2026, 11, 1, 3)],
)
def test_windows_refuse_anything_but_whole_utc_hours(moment: datetime) -> None:
    with pytest.raises(ValueError, match="not a whole UTC hour"):
        HourWindow(moment, datetime(2026, 11, 1, 5, tzinfo=UTC))
