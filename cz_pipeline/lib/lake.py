"""The Parquet lake: one Hive-partitioned folder per dataset and UTC hour.

``<root>/<dataset>/date=YYYY-MM-DD/hour=HH/<dataset>.parquet``. A file is written under a
dot-prefixed temporary name (which Hive readers such as DuckDB, Spark and pyarrow skip) and renamed
into place only when complete, so a failed run leaves the previous good file untouched.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from cz_pipeline.lib.hours import hive_path

PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3}


@dataclass(frozen=True)
class WrittenFile:
    path: str
    bytes: int
    rows: int


class HourFileWriter:
    """Appends record batches to one hour's temporary file; see :meth:`Lake.hour_writer`.

    Set ``destination`` to another dataset before the block ends to file the hour there instead
    (a quarantine), leaving the original dataset's file as it was.
    """

    def __init__(self, writer: pq.ParquetWriter, destination: str) -> None:
        self._writer = writer
        self.destination = destination
        self.rows = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows:
            self._writer.write(batch)
            self.rows += batch.num_rows


class Lake:
    """A lake rooted at a local folder or an fsspec URL (``s3://bucket/prefix``)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.root = self.root.rstrip("/")

    def hour_folder(self, dataset: str, hour: datetime) -> str:
        return f"{self.root}/{dataset}/{hive_path(hour)}"

    def hour_file(self, dataset: str, hour: datetime, suffix: str = "parquet") -> str:
        return f"{self.hour_folder(dataset, hour)}/{dataset}.{suffix}"

    def display_path(self, path: str) -> str:
        """The path as a user would type it (with the URL scheme for object stores)."""
        if isinstance(self.fs, LocalFileSystem):
            return path
        return self.fs.unstrip_protocol(path)

    @contextmanager
    def hour_writer(
        self, dataset: str, hour: datetime, schema: pa.Schema
    ) -> Iterator[HourFileWriter]:
        """Stream batches into one hour's file; it replaces the old file only on success.

        An hour with no rows still gets a file with the schema, so "materialized" always means
        "the file exists".
        """
        folder = self.hour_folder(dataset, hour)
        temporary = f"{folder}/.{dataset}.{uuid.uuid4().hex}.tmp"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with (
                self.fs.open(temporary, "wb") as stream,
                pq.ParquetWriter(stream, schema, **PARQUET_OPTIONS) as parquet_writer,
            ):
                writer = HourFileWriter(parquet_writer, dataset)
                yield writer
            # The file keeps the dataset's name wherever it is filed.
            final = f"{self.hour_folder(writer.destination, hour)}/{dataset}.parquet"
            self.fs.makedirs(self.hour_folder(writer.destination, hour), exist_ok=True)
            self.fs.mv(temporary, final)
        except BaseException:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
            raise

    def write_hour(self, dataset: str, hour: datetime, table: pa.Table) -> WrittenFile:
        with self.hour_writer(dataset, hour, table.schema) as writer:
            writer.write(table)
        path = self.hour_file(dataset, hour)
        return WrittenFile(path, self.fs.size(path), table.num_rows)

    def write_bytes(self, dataset: str, hour: datetime, name: str, content: bytes) -> str:
        """Write a small non-Parquet file (a receipt, a request body) atomically."""
        folder = self.hour_folder(dataset, hour)
        self.fs.makedirs(folder, exist_ok=True)
        final = f"{folder}/{name}"
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(temporary, "wb") as stream:
            stream.write(content)
        self.fs.mv(temporary, final)
        return final

    def read_json(self, dataset: str, hour: datetime, name: str) -> Any:
        path = f"{self.hour_folder(dataset, hour)}/{name}"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as stream:
            return json.load(stream)

    def write_json(self, dataset: str, hour: datetime, name: str, value: Any) -> str:
        content = json.dumps(value, indent=2, sort_keys=True).encode()
        return self.write_bytes(dataset, hour, name, content)

    def has_hour(self, dataset: str, hour: datetime) -> bool:
        return bool(self.fs.exists(self.hour_file(dataset, hour)))

    def read_hour(
        self,
        dataset: str,
        hour: datetime,
        columns: list[str] | None = None,
        dataset_file: str | None = None,
    ) -> pa.Table:
        """Read one hour; ``dataset_file`` names the file of a quarantined dataset's hour."""
        path = f"{self.hour_folder(dataset, hour)}/{dataset_file or dataset}.parquet"
        with self.fs.open(path, "rb") as stream:
            return pq.read_table(stream, columns=columns)

    def file_size(self, path: str) -> int:
        return int(self.fs.size(path))
