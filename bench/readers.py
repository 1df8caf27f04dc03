"""Prototype readers for the extraction benchmark (bench only; cz_pipeline/ is not changed).

* ``prefetch``: the production source, with its batches pulled by a background thread into a
  bounded queue, so PostgreSQL/ADBC produce batch n+1 while normalize + Parquet handle batch n.
* ``split``: the hour cut into ``parts`` sub-windows read by ``connections`` parallel ADBC
  connections (each a read-only session like the production source's), handed to the lake writer
  in ``start_time`` order. At most ``connections`` sub-windows are buffered at a time, so memory
  is bounded by the sub-window size, not by the hour.

Both yield exactly the batches (schema, order) that ``LiteLLMPostgresSource.extract`` yields.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.sources.base import Extraction
from cz_pipeline.lib.sources.litellm_postgres import (
    LiteLLMPostgresSource,
    read_only_url,
    window_query,
)
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA

_DONE = object()
_BATCH_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"


def prefetch(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Iterate ``batches`` on a background thread, at most ``depth`` batches ahead."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for batch in batches:
                buffer.put(batch)
        except BaseException as error:  # handed to the consumer
            buffer.put(error)
            return
        buffer.put(_DONE)

    thread = threading.Thread(target=produce, name="adbc-prefetch", daemon=True)
    thread.start()
    while True:
        item = buffer.get()
        if item is _DONE:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def _sql_timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}'"


def sub_window_query(window: HourWindow, start: datetime, end: datetime) -> str:
    """``window_query(window)`` with its bounds replaced by ``[start, end)``."""
    query = window_query(window)
    for old, new in ((window.start, start), (window.end, end)):
        literal = _sql_timestamp(old)
        if query.count(literal) != 1:
            raise RuntimeError(f"window_query changed shape: {literal} not found once")
        query = query.replace(literal, _sql_timestamp(new))
    return query


@dataclass
class _SubWindow:
    query: str
    batches: queue.Queue[Any]
    may_start: threading.Event


def _read(url: str, hint_bytes: int, jobs: list[_SubWindow]) -> None:
    """One connection reading its sub-windows in order, each into its own (unbounded) queue."""
    connection = None
    try:
        connection = adbc.connect(read_only_url(url, 600_000))
        for job in jobs:
            job.may_start.wait()
            cursor = connection.cursor()
            try:
                cursor.adbc_statement.set_options(**{_BATCH_HINT_OPTION: str(hint_bytes)})
                cursor.execute(job.query)
                for batch in cursor.fetch_record_batch():
                    job.batches.put(
                        pa.RecordBatch.from_arrays(
                            [
                                column.cast(field.type)
                                for column, field in zip(batch.columns, EXTRACT_SCHEMA, strict=True)
                            ],
                            schema=EXTRACT_SCHEMA,
                        )
                    )
            finally:
                cursor.close()
            job.batches.put(_DONE)
    except BaseException as error:
        for job in jobs:
            job.batches.put(error)
    finally:
        if connection is not None:
            connection.close()


def split_extraction(
    url: str,
    window: HourWindow,
    *,
    parts: int,
    connections: int = 2,
    hint_bytes: int = 16 * 1024 * 1024,
) -> Extraction:
    """The hour read as ``parts`` sub-windows over ``connections`` parallel connections."""
    step = (window.end - window.start) / parts
    bounds = [window.start + step * i for i in range(parts)] + [window.end]
    if any((b - window.start) % timedelta(seconds=1) for b in bounds):
        raise ValueError(f"{parts} sub-windows do not fall on whole seconds")
    jobs = [
        _SubWindow(
            sub_window_query(window, bounds[i], bounds[i + 1]), queue.Queue(), threading.Event()
        )
        for i in range(parts)
    ]
    for job in jobs[:connections]:
        job.may_start.set()
    # Aliases exactly as the production source reads them (one extra short connection).
    source = LiteLLMPostgresSource(url)
    lookup_connection = adbc.connect(read_only_url(url, 600_000))
    try:
        aliases, notes = source._alias_lookup(lookup_connection.cursor())
    finally:
        lookup_connection.close()
    threads = [
        threading.Thread(target=_read, args=(url, hint_bytes, jobs[i::connections]), daemon=True)
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()

    def batches() -> Iterator[pa.RecordBatch]:
        for index, job in enumerate(jobs):
            while True:
                item = job.batches.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            # Sub-window ``index`` is consumed: the connection that read it may start the next.
            if index + connections < parts:
                jobs[index + connections].may_start.set()
        for thread in threads:
            thread.join()

    # Reconciliation totals like the production source's (on their own connection here).
    totals = source.hourly_totals(window)
    return Extraction(batches(), notes, aliases, source_totals=totals)
