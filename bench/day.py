"""A realistic daily run: 24 hours of at least 20,000 requests each with ~10 KB of metadata,
materialized as one Dagster run (extract, line items, uploads to the local fake CloudZero),
against the sum of its 24 hours' floors.

Each hour's floor is ``psql`` COPY binary of ``window_query(hour)`` with the output thrown away,
as in ``bench/extract.py``; the run reads the day with one query, whose own COPY floor is
measured too. The run's step times come from its event log. The same work without Dagster
(``bench/pipeline.py``) gives Dagster's share: the run minus that work.

The day is loaded once into a database of its own (``cz_bench_day``) and reused while it holds
the same rows: loading 480,000 rows with 10 KB of metadata takes several minutes.

    python -m bench.day --rows-per-hour 20000 --shape padded
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg2

from bench.database import SHAPES, ensure_database
from bench.extract import copy_command, time_psql_copy
from bench.pipeline import measure
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.sources.litellm_postgres import window_query
from cz_pipeline.lib.synthetic import write_to_postgres

DAY_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cz_bench_day"
DAY = HourWindow(datetime(2026, 9, 15, tzinfo=UTC), datetime(2026, 9, 16, tzinfo=UTC))
SEED = 6
_LOADS = "cz_bench_day_loads"
EXTRACT_STEP = "litellm_spend_logs"


def _day_rows(cursor: Any) -> int:
    cursor.execute("SELECT to_regclass('\"LiteLLM_SpendLogs\"') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute(
        'SELECT count(*) FROM "LiteLLM_SpendLogs" WHERE "startTime" >= %s AND "startTime" < %s',
        (DAY.start.replace(tzinfo=None), DAY.end.replace(tzinfo=None)),
    )
    return int(cursor.fetchone()[0])


def load_day(url: str, rows_per_hour: int, shape: str, padding_bytes: int) -> dict[str, Any]:
    """The day in ``url``: reused when an earlier load of the same settings is intact."""
    ensure_database(url)
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {_LOADS} (rows_per_hour int, shape text, "
                "padding_bytes int, seed int, rows bigint, metadata_bytes_avg int)"
            )
            cursor.execute(
                f"SELECT rows, metadata_bytes_avg FROM {_LOADS} WHERE rows_per_hour = %s "
                "AND shape = %s AND padding_bytes = %s AND seed = %s",
                (rows_per_hour, shape, padding_bytes, SEED),
            )
            found = cursor.fetchone()
            if found and found[0] == _day_rows(cursor):
                return {"rows": found[0], "metadata_bytes_avg": found[1], "load_s": 0.0}
            cursor.execute('DROP TABLE IF EXISTS "LiteLLM_SpendLogs"')
            cursor.execute(f"DELETE FROM {_LOADS}")
            print(f"loading the day: {rows_per_hour:,} rows/hour, {shape} ...", file=sys.stderr)
            started = time.perf_counter()
            written = write_to_postgres(
                url,
                DAY,
                rows_per_hour,
                SEED,
                metadata_padding_bytes=padding_bytes,
                full_model_map=shape == "model_map",
            )
            cursor.execute('VACUUM ANALYZE "LiteLLM_SpendLogs"')
            load_s = time.perf_counter() - started
            cursor.execute(
                "SELECT avg(octet_length(metadata::text))::int FROM (SELECT metadata FROM "
                '"LiteLLM_SpendLogs" LIMIT 1000) AS sample'
            )
            metadata_bytes = int(cursor.fetchone()[0])
            cursor.execute(
                f"INSERT INTO {_LOADS} VALUES (%s, %s, %s, %s, %s, %s)",
                (rows_per_hour, shape, padding_bytes, SEED, written.rows_written, metadata_bytes),
            )
    finally:
        connection.close()
    return {"rows": written.rows_written, "metadata_bytes_avg": metadata_bytes, "load_s": load_s}


def floors(url: str) -> dict[str, Any]:
    """COPY floor of each hour's query (summed) and of the day's one query."""
    hours = [
        time_psql_copy(url, copy_command(window_query(HourWindow.for_hour(hour))))[0]
        for hour in DAY.hours()
    ]
    day = time_psql_copy(url, copy_command(window_query(DAY)))[0]
    return {"hour_floors_s": hours, "sum_of_hour_floors_s": sum(hours), "day_query_floor_s": day}


def run(
    rows_per_hour: int,
    shape: str = "padded",
    padding_bytes: int = 7000,
    instance: str = "postgres-batched",
    url: str = DAY_DATABASE_URL,
) -> dict[str, Any]:
    loaded = load_day(url, rows_per_hour, shape, padding_bytes if shape == "padded" else 0)
    floor = floors(url)
    result = measure(instance, DAY, url)
    sum_of_floors = floor["sum_of_hour_floors_s"]
    extract_step = result["step_seconds"].get(EXTRACT_STEP, float("nan"))
    return {
        "rows_per_hour": rows_per_hour,
        "shape": shape,
        **loaded,
        "instance": instance,
        "floors": floor,
        "sum_of_hour_floors_s": sum_of_floors,
        "extract_step_s": extract_step,
        "extract_step_vs_floors": extract_step / sum_of_floors,
        "run": result,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| shape | rows | metadata B/row | sum of 24 hour floors s | day query floor s "
        "| extract step s | extract / floors | line items step s | upload step s "
        "| Dagster run s | our work alone s | Dagster's share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        run_result, steps = r["run"], r["run"]["step_seconds"]
        day_floor = r["floors"]["day_query_floor_s"]
        share = run_result["bookkeeping_seconds"] / run_result["dagster_run_seconds"]
        lines.append(
            f"| {r['shape']} | {r['rows']:,} | {r['metadata_bytes_avg']:,} | "
            f"{r['sum_of_hour_floors_s']:.1f} | {day_floor:.1f} | {r['extract_step_s']:.1f} | "
            f"{r['extract_step_vs_floors']:.2f}x | "
            f"{steps.get('cloudzero_line_items', float('nan')):.1f} | "
            f"{steps.get('cloudzero_billing_drops', float('nan')):.1f} | "
            f"{run_result['dagster_run_seconds']:.1f} | "
            f"{run_result['work_without_dagster_seconds']:.1f} | {share:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.day", description=__doc__)
    parser.add_argument("--rows-per-hour", type=int, default=20_000)
    parser.add_argument("--shape", choices=SHAPES, default="padded")
    parser.add_argument("--padding-bytes", type=int, default=7000)
    options = parser.parse_args(argv)
    result = run(options.rows_per_hour, options.shape, options.padding_bytes)
    print(json.dumps(result, default=str), file=sys.stderr)
    print(table([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
