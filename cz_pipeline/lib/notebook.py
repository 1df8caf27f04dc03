"""Read a range of hours of the lake into pandas, for a look from a notebook.

Only the asked hours' files are opened (the lake is laid out per hour), and only the asked
columns are read from them. Hours that were never materialized, or that were held back into a
quarantine, are not in the lake's dataset and so not in the frame.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, parse_partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.line_item_lake import LINE_ITEMS_DATASET
from cz_pipeline.lib.settings import load_settings
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET

READABLE_DATASETS = (SPEND_LOGS_DATASET, LINE_ITEMS_DATASET)


def _hour(value: datetime | str) -> datetime:
    return floor_hour(value) if isinstance(value, datetime) else parse_partition_key(value)


def read_hours(
    dataset: str,
    first: datetime | str,
    last: datetime | str,
    *,
    columns: list[str] | None = None,
    lake_url: str | None = None,
    **storage_options: Any,
) -> pd.DataFrame:
    """The hours ``first`` to ``last`` (both included) of a lake dataset as one DataFrame.

    ``dataset`` is ``litellm_spend_logs`` or ``cloudzero_line_items``. Hours are datetimes
    (naive means UTC) or partition keys such as ``"2025-06-01-13:00"``. ``lake_url`` defaults
    to ``CZ_LAKE_URL``; an ``s3://`` URL takes s3fs ``storage_options`` or the usual AWS
    variables. Columns keep their Arrow types (``pd.ArrowDtype``): decimals, timestamps in UTC
    and strings come through exactly as stored.

        >>> from cz_pipeline import read_hours
        >>> df = read_hours("litellm_spend_logs", "2025-06-01-00:00", "2025-06-01-23:00",
        ...                 columns=["start_time", "model", "spend"])
    """
    if dataset not in READABLE_DATASETS:
        raise ValueError(f"dataset {dataset!r}: expected one of {', '.join(READABLE_DATASETS)}")
    start, end = _hour(first), _hour(last)
    if end < start:
        raise ValueError(f"last hour {end:%Y-%m-%d %H:%M} is before first {start:%Y-%m-%d %H:%M}")
    lake = Lake(lake_url or load_settings().lake_url, **storage_options)
    window = HourWindow(start, end + HOUR)
    tables = [
        lake.read_hour(dataset, hour, columns=columns)
        for hour in window.hours()
        if lake.has_hour(dataset, hour)
    ]
    if not tables:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns or []})
    return pa.concat_tables(tables, promote_options="default").to_pandas(types_mapper=pd.ArrowDtype)
