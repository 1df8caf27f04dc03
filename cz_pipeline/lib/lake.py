"""The Parquet lake: one Hive-partitioned folder per dataset and UTC hour.

``<root>/<dataset>/date=YYYY-MM-DD/hour=HH/<dataset>.parquet``, rooted at a local folder or an
fsspec URL (``s3://bucket/prefix``). Whatever the store, the file at a final path is either the
previous complete file or the new complete file, never a partial one, so a failed run leaves the
previous good file untouched. How that is achieved depends on the store:

- On a filesystem (local disk), a file is written under a dot-prefixed temporary name next to
  its final one (Hive readers such as DuckDB, Spark and pyarrow skip such names) and renamed into
  place only when complete; a rename within one filesystem is atomic.
- On an object store (S3 and S3-compatible stores, GCS, Azure Blob), a "rename" is a copy plus a
  delete, but writing one object is atomic: readers see the old object until the upload has
  completed, whether it is a single PUT or a multipart upload. So a file is staged on local disk
  (``TMPDIR``; memory stays bounded) and uploaded to its final key in one go only when complete.
  A failure before that uploads nothing: no partial object, no temporary object.
"""

from __future__ import annotations

import posixpath
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from cz_pipeline.lib.hours import as_utc, hive_path

# Per-request ids never repeat, so dictionary-encoding them only costs time; zstd level 1 gives
# the same file size as level 3 on spend logs at half the write time (bench/README.md).
_UNIQUE_COLUMNS = frozenset({"request_id", "litellm_call_id", "session_id"})
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1}
STALE_TEMPORARY_AFTER = timedelta(minutes=10)
"""A temporary file unchanged this long belongs to a writer that died: the lake writes a file
from start to end without pausing, and an hour's Parquet takes seconds, not minutes."""


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    dictionary = [name for name in schema.names if name not in _UNIQUE_COLUMNS]
    return PARQUET_OPTIONS | {"use_dictionary": dictionary}


@dataclass(frozen=True)
class WrittenFile:
    path: str
    bytes: int
    rows: int


class HourFileWriter:
    """Appends record batches to one hour's temporary file; see :meth:`Lake.hour_writer`.

    Set ``destination`` to another dataset before the block ends to file the hour there instead
    (a quarantine), or to None to discard it (a stale read), leaving the original dataset's
    file as it was.
    """

    def __init__(self, writer: pq.ParquetWriter, destination: str) -> None:
        self._writer = writer
        self.destination: str | None = destination
        self.rows = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows:
            self._writer.write(batch)
            self.rows += batch.num_rows


@dataclass
class _Staged:
    """A file being written: bytes go to ``stream``; on success it lands at ``destination``
    (None: it is discarded)."""

    stream: IO[bytes]
    destination: str | None


class _Placement(ABC):
    """How a complete file reaches its final path on one kind of store."""

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs

    @abstractmethod
    def staged(self, final: str) -> AbstractContextManager[_Staged]:
        """Collect a file's bytes; on a clean exit put them at ``destination`` in one step,
        on an exception leave the store as it was."""


class _RenameIntoPlace(_Placement):
    """Filesystems: a dot-prefixed temporary file beside the final one, renamed over it.

    A process killed mid-write leaves its temporary file behind; the next write of the same
    file removes such leftovers once they have not changed for :data:`STALE_TEMPORARY_AFTER`,
    so a concurrent writer's file, which is still growing, is never taken from under it.
    """

    @contextmanager
    def staged(self, final: str) -> Iterator[_Staged]:
        folder, name = posixpath.split(final)
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(temporary, "wb") as stream:
                staged = _Staged(stream, final)
                yield staged
            if staged.destination is None:
                self.fs.rm(temporary)
                return
            self.fs.makedirs(posixpath.dirname(staged.destination), exist_ok=True)
            self.fs.mv(temporary, staged.destination)
        except BaseException:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
            raise
        self._remove_stale_temporaries(folder, name)

    def _remove_stale_temporaries(self, folder: str, name: str) -> None:
        stale_before = datetime.now(UTC) - STALE_TEMPORARY_AFTER
        # A plain listing of the folder, not a glob: this runs after every file written.
        prefix = f".{name}."
        leftovers = [
            path
            for path in self.fs.ls(folder, detail=False)
            if posixpath.basename(path).startswith(prefix) and path.endswith(".tmp")
        ]
        for path in leftovers:
            try:
                if as_utc(self.fs.modified(path)) < stale_before:
                    self.fs.rm(path)
            except FileNotFoundError:  # another writer finished or cleaned it meanwhile
                continue


class _UploadWhole(_Placement):
    """Object stores: staged on local disk, then written to the final key as one object.

    ``put_file`` sends one PUT, or for a large file a multipart upload that the store only
    makes visible once it is completed (s3fs aborts it on failure). Object stores have no
    folders, so none are made.
    """

    @contextmanager
    def staged(self, final: str) -> Iterator[_Staged]:
        suffix = posixpath.splitext(final)[1]
        with tempfile.NamedTemporaryFile(prefix=".cz-lake-", suffix=suffix) as local:
            staged = _Staged(local, final)
            yield staged
            if staged.destination is not None:
                local.flush()
                self.fs.put_file(local.name, staged.destination)


# fsspec protocols whose writes of one object are atomic and whose rename is copy plus delete.
_OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})


def _is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & _OBJECT_STORE_PROTOCOLS)


class Lake:
    """A lake rooted at a local folder or an fsspec URL (``s3://bucket/prefix``).

    ``storage_options`` go to the fsspec filesystem (for S3, s3fs's ``endpoint_url``, ``key``,
    ``client_kwargs`` and so on); without them s3fs takes the standard AWS configuration
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, instance or pod roles), and
    fsspec also reads ``FSSPEC_S3_<OPTION>`` variables.

    The filesystem never caches listings: fsspec keeps one filesystem object per process, and
    s3fs answers a file's existence and size from any listing of its folder the process made
    before, so a Celery worker would miss or cut short what another run or worker wrote since.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(
            self.url, **storage_options, use_listings_cache=False
        )
        self.root = self.root.rstrip("/")
        self._placement: _Placement = (
            _UploadWhole(self.fs) if _is_object_store(self.fs) else _RenameIntoPlace(self.fs)
        )

    def hour_folder(self, dataset: str, hour: datetime) -> str:
        return f"{self.root}/{dataset}/{hive_path(hour)}"

    def hour_file(self, dataset: str, hour: datetime, suffix: str = "parquet") -> str:
        return f"{self.hour_folder(dataset, hour)}/{dataset}.{suffix}"

    def display_path(self, path: str) -> str:
        """The path as a user would type it (with the URL scheme for object stores)."""
        if isinstance(self.fs, LocalFileSystem):
            return path
        return str(self.fs.unstrip_protocol(path))

    @contextmanager
    def hour_writer(
        self, dataset: str, hour: datetime, schema: pa.Schema
    ) -> Iterator[HourFileWriter]:
        """Stream batches into one hour's file; it replaces the old file only on success.

        An hour with no rows still gets a file with the schema, so "materialized" always means
        "the file exists".
        """
        with (
            self._placement.staged(self.hour_file(dataset, hour)) as staged,
            pq.ParquetWriter(staged.stream, schema, **_parquet_options(schema)) as parquet_writer,
        ):
            writer = HourFileWriter(parquet_writer, dataset)
            yield writer
            # The file keeps the dataset's name wherever it is filed.
            staged.destination = (
                None
                if writer.destination is None
                else f"{self.hour_folder(writer.destination, hour)}/{dataset}.parquet"
            )

    def write_hour(self, dataset: str, hour: datetime, table: pa.Table) -> WrittenFile:
        with self.hour_writer(dataset, hour, table.schema) as writer:
            writer.write(table)
        path = self.hour_file(dataset, hour)
        return WrittenFile(path, self.fs.size(path), table.num_rows)

    def write_bytes(self, dataset: str, hour: datetime, name: str, content: bytes) -> str:
        """Write a small non-Parquet file (a receipt, a request body) atomically."""
        final = f"{self.hour_folder(dataset, hour)}/{name}"
        with self._placement.staged(final) as staged:
            staged.stream.write(content)
        return final

    def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern`` as the store holds them now (nothing listed is cached)."""
        return sorted(self.fs.glob(pattern))

    def remove_hour_files(self, dataset: str, hour: datetime, keep: set[str], pattern: str) -> None:
        """Delete the hour's files matching ``pattern`` whose names are not in ``keep``."""
        folder = self.hour_folder(dataset, hour)
        for path in self.glob(f"{folder}/{pattern}"):
            if posixpath.basename(path) not in keep:
                self.fs.rm(path)

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
            # ParquetFile, not read_table: one file needs no dataset discovery, which costs as
            # much as the read itself on an hour's small file (a backfill reads thousands).
            parquet = pq.ParquetFile(stream)
            unknown = sorted(set(columns or ()) - set(parquet.schema_arrow.names))
            if unknown:  # ParquetFile.read would leave them out without a word
                raise ValueError(
                    f"{self.display_path(path)} has no column {', '.join(unknown)}; "
                    f"its columns: {', '.join(parquet.schema_arrow.names)}"
                )
            return parquet.read(columns=columns)

    def file_size(self, path: str) -> int:
        return int(self.fs.size(path))
