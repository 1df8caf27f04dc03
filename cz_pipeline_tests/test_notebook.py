"""``cz_pipeline.read_hours``: a range of lake hours as a pandas DataFrame for notebooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from cz_pipeline import read_hours
from cz_pipeline.lib.hours import HOUR
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.settings import load_settings

FIRST = datetime(2026, 11, 30, 22, tzinfo=UTC)
SPEND = pa.decimal128(20, 10)


def hour_rows(hour: datetime) -> pa.Table:
    return pa.table(
        {
            "request_id": [f"{hour:%H}-a", f"{hour:%H}-b"],
            "start_time": pa.array([hour, hour + timedelta(minutes=5)], pa.timestamp("ms", "UTC")),
            "spend": pa.array([Decimal("0.1"), Decimal("0.0000000025")], SPEND),
            "model": ["gpt-4o", "claude"],
        }
    )


def write_hours(lake: Lake, hours: int) -> list[datetime]:
    written = [FIRST + i * HOUR for i in range(hours)]
    for hour in written:
        lake.write_hour("litellm_spend_logs", hour, hour_rows(hour))
    return written


def corrupt(lake: Lake, hour: datetime) -> None:
    """Garbage where an hour's file is: reading it would fail, so it must not be opened."""
    with lake.fs.open(lake.hour_file("litellm_spend_logs", hour), "wb") as stream:
        stream.write(b"not parquet")


def assert_two_middle_hours(frame: pd.DataFrame, hours: list[datetime]) -> None:
    assert list(frame.columns) == ["request_id", "spend"]
    assert frame["request_id"].tolist() == [
        f"{hours[1]:%H}-a",
        f"{hours[1]:%H}-b",
        f"{hours[2]:%H}-a",
        f"{hours[2]:%H}-b",
    ]
    assert frame["spend"].dtype == pd.ArrowDtype(SPEND)
    assert frame["spend"].tolist()[:2] == [Decimal("0.1"), Decimal("0.0000000025")]


def test_reads_the_asked_hours_and_columns_with_arrow_dtypes(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    hours = write_hours(lake, 4)
    corrupt(lake, hours[0])
    corrupt(lake, hours[3])
    frame = read_hours(
        "litellm_spend_logs",
        "2026-11-30-23:00",
        hours[2],
        columns=["request_id", "spend"],
        lake_url=str(tmp_path),
    )
    assert_two_middle_hours(frame, hours)


def test_all_columns_keep_utc_timestamps(tmp_path: Path) -> None:
    write_hours(Lake(str(tmp_path)), 1)
    frame = read_hours("litellm_spend_logs", FIRST, FIRST, lake_url=str(tmp_path))
    assert frame["start_time"].dtype == pd.ArrowDtype(pa.timestamp("ms", "UTC"))
    assert frame["start_time"].iloc[0] == pd.Timestamp(FIRST)


def test_the_lake_url_defaults_to_cz_lake_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_hours(Lake(str(tmp_path)), 2)
    monkeypatch.setenv("CZ_LAKE_URL", str(tmp_path))
    # A fresh process: settings are read once per process, so forget this one's before and after.
    load_settings.cache_clear()
    try:
        frame = read_hours("litellm_spend_logs", FIRST, FIRST + HOUR, columns=["model"])
    finally:
        load_settings.cache_clear()
    assert len(frame) == 4


def test_hours_not_in_the_lake_are_absent_not_an_error(tmp_path: Path) -> None:
    write_hours(Lake(str(tmp_path)), 1)
    frame = read_hours(
        "litellm_spend_logs", FIRST - HOUR, FIRST + HOUR, columns=["model"], lake_url=str(tmp_path)
    )
    assert frame["model"].tolist() == ["gpt-4o", "claude"]
    empty = read_hours(
        "cloudzero_line_items", FIRST, FIRST, columns=["cost/cost"], lake_url=str(tmp_path)
    )
    assert list(empty.columns) == ["cost/cost"]
    assert empty.empty


@pytest.mark.parametrize(
    ("dataset", "first", "last", "message"),
    [
        ("litellm_spend_logs_quarantine", FIRST, FIRST, "expected one of litellm_spend_logs"),
        ("litellm_spend_logs", FIRST + HOUR, FIRST, "is before first"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    tmp_path: Path, dataset: str, first: datetime, last: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_hours(dataset, first, last, lake_url=str(tmp_path))
