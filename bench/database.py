"""The benchmark database: a dedicated ``cz_bench`` holding one loaded UTC hour per size and shape.

Two metadata shapes: ``padded`` (the synthetic price-map entry grown with null fields to the
padding) and ``model_map`` (every one of the 182 price-map fields LiteLLM 1.108 writes into
``metadata.model_map_information``, about 8 KB, as real rows carry them). Loading 200,000 rows with
~10 KB metadata takes minutes, so a loaded hour is recorded in a small bookkeeping table
(``cz_bench_loads``) and reused by later runs when it still holds the same number of rows written
with the same shape, padding and seed. Each size gets its own hour (09:00 UTC, one day
apart from 2026-10-01): the generator's daily rhythm scales 09:00 by exactly 1.0, so an hour
loaded with ``rows_per_hour=N`` holds exactly N rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from cz_pipeline.lib import litellm_tables
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.synthetic import hourly_row_count, write_to_postgres

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cz_bench"
FIRST_SLOT = datetime(2026, 10, 1, 9, tzinfo=UTC)
SLOT_STEP = timedelta(days=1)
SEED = 2
SHAPES = ("padded", "model_map")
_LOADS_TABLE = "cz_bench_loads"
_SPEND_LOGS = litellm_tables.SPEND_LOGS


@dataclass(frozen=True)
class LoadedHour:
    """One hour of synthetic spend logs in the benchmark database."""

    hour: datetime
    rows: int
    padding_bytes: int
    seed: int
    reused: bool
    shape: str  # one of SHAPES
    load_s: float  # 0 when reused
    table_bytes: int  # "LiteLLM_SpendLogs" with TOAST and indexes, all hours loaded
    metadata_bytes_avg: int  # average octet length of metadata::text in the hour

    @property
    def window(self) -> HourWindow:
        return HourWindow.for_hour(self.hour)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` when it does not exist (via the ``postgres`` db)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(admin)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def _autocommit(url: str) -> Any:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    return connection


def _ensure_bookkeeping(cursor: Any) -> None:
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {_LOADS_TABLE} (hour timestamp PRIMARY KEY, "
        "rows bigint NOT NULL, padding_bytes int NOT NULL, seed int NOT NULL, "
        "load_s float8 NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())"
    )
    cursor.execute(
        f"ALTER TABLE {_LOADS_TABLE} ADD COLUMN IF NOT EXISTS shape text NOT NULL DEFAULT 'padded'"
    )


def _spend_logs_exists(cursor: Any) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{_SPEND_LOGS}"',))
    return bool(cursor.fetchone()[0])


def _hour_count(cursor: Any, hour: datetime) -> int:
    if not _spend_logs_exists(cursor):
        return 0
    start = _naive(hour)
    cursor.execute(
        f'SELECT count(*) FROM "{_SPEND_LOGS}" WHERE "startTime" >= %s AND "startTime" < %s',
        (start, start + timedelta(hours=1)),
    )
    return int(cursor.fetchone()[0])


def _pick_slot(
    cursor: Any, rows: int, padding: int, seed: int, shape: str
) -> tuple[datetime, bool]:
    """(hour, reusable): the hour already loaded with this size, else the first free slot."""
    cursor.execute(
        f"SELECT hour, rows, padding_bytes, seed, shape FROM {_LOADS_TABLE} ORDER BY hour",
    )
    recorded = {row[0].replace(tzinfo=UTC): row[1:] for row in cursor.fetchall()}
    for hour, loaded in recorded.items():
        if loaded == (rows, padding, seed, shape):
            if _hour_count(cursor, hour) == rows:
                return hour, True
            return hour, False  # recorded but altered since: reload this slot
    slot = FIRST_SLOT
    while slot in recorded or _hour_count(cursor, slot):
        slot += SLOT_STEP
    return slot, False


def _clear_hour(cursor: Any, hour: datetime) -> None:
    if _spend_logs_exists(cursor):
        start = _naive(hour)
        cursor.execute(
            f'DELETE FROM "{_SPEND_LOGS}" WHERE "startTime" >= %s AND "startTime" < %s',
            (start, start + timedelta(hours=1)),
        )
    cursor.execute(f"DELETE FROM {_LOADS_TABLE} WHERE hour = %s", (_naive(hour),))


def load_hour(
    url: str,
    rows: int,
    padding_bytes: int,
    seed: int = SEED,
    log: Callable[[str], None] = print,
    shape: str = "padded",
) -> LoadedHour:
    """Make sure one hour holds exactly ``rows`` synthetic rows of ``shape``; load it (and
    VACUUM ANALYZE) only when no earlier run left such an hour behind."""
    if shape not in SHAPES:
        raise ValueError(f"unknown metadata shape {shape!r}; choose from {', '.join(SHAPES)}")
    connection = _autocommit(url)
    try:
        with connection.cursor() as cursor:
            _ensure_bookkeeping(cursor)
            hour, reusable = _pick_slot(cursor, rows, padding_bytes, seed, shape)
            load_s = 0.0
            if reusable:
                log(
                    f"reusing {hour:%Y-%m-%d %H:%M} UTC: {rows:,} rows, {shape}, "
                    f"padding {padding_bytes}"
                )
            else:
                if hourly_row_count(hour, rows) != rows:
                    raise RuntimeError(f"{hour} is not a 1.0x hour of the synthetic rhythm")
                _clear_hour(cursor, hour)
                log(
                    f"loading {rows:,} rows ({shape} metadata, padding {padding_bytes} B) into "
                    f"{hour:%Y-%m-%d %H:%M} UTC ..."
                )
                started = time.perf_counter()
                summary = write_to_postgres(
                    url,
                    HourWindow.for_hour(hour),
                    rows,
                    seed,
                    metadata_padding_bytes=padding_bytes,
                    full_model_map=shape == "model_map",
                )
                cursor.execute(f'VACUUM ANALYZE "{_SPEND_LOGS}"')
                load_s = time.perf_counter() - started
                if summary.rows_written != rows or _hour_count(cursor, hour) != rows:
                    raise RuntimeError(
                        f"loaded {summary.rows_written} rows into {hour}, expected {rows}"
                    )
                cursor.execute(
                    f"INSERT INTO {_LOADS_TABLE} (hour, rows, padding_bytes, seed, load_s, shape)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (_naive(hour), rows, padding_bytes, seed, load_s, shape),
                )
                log(f"loaded in {load_s:.0f} s (VACUUM ANALYZE included)")
            cursor.execute("SELECT pg_total_relation_size(%s)", (f'"{_SPEND_LOGS}"',))
            table_bytes = int(cursor.fetchone()[0])
            start = _naive(hour)
            cursor.execute(
                "SELECT avg(octet_length(metadata::text))::bigint FROM "
                f'(SELECT metadata FROM "{_SPEND_LOGS}" '
                'WHERE "startTime" >= %s AND "startTime" < %s LIMIT 1000) AS sample',
                (start, start + timedelta(hours=1)),
            )
            metadata_bytes = int(cursor.fetchone()[0] or 0)
    finally:
        connection.close()
    return LoadedHour(
        hour=hour,
        rows=rows,
        padding_bytes=padding_bytes,
        seed=seed,
        reused=reusable,
        shape=shape,
        load_s=load_s,
        table_bytes=table_bytes,
        metadata_bytes_avg=metadata_bytes,
    )


def server_version(url: str) -> str:
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = str(cursor.fetchone()[0])
            cursor.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('shared_buffers', 'work_mem', 'jit', 'max_parallel_workers_per_gather') "
                "ORDER BY name"
            )
            settings = ", ".join(f"{name}={value}" for name, value in cursor.fetchall())
    finally:
        connection.close()
    return f"PostgreSQL {version} ({settings})"
