"""One extraction repetition in a fresh process: ``python -m bench.extract_child ...``.

Extracts one hour from PostgreSQL, normalizes it and writes it to a temporary lake, then prints
one JSON line: wall seconds of extract + normalize + Parquet write (imports and interpreter start
excluded), rows, Parquet bytes, and the process's peak RSS (``VmHWM``) before and after.
``VmHWM`` is the peak of this program's own memory: the parent's ``ru_maxrss`` of the child is
not, since Linux carries the forking parent's peak over ``exec`` into it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench.readers import prefetch, split_extraction
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.sources.base import Extraction
from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource
from cz_pipeline.lib.spend_log_lake import extract_to_lake

READERS = ("ours", "split")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def vm_hwm_mb() -> float:
    """Peak resident set size of this process so far, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def extraction_for(args: argparse.Namespace, window: HourWindow) -> Extraction:
    if args.reader == "ours":
        source = LiteLLMPostgresSource(args.database, batch_size_hint_bytes=args.batch_hint_bytes)
        extraction = source.extract(window)
    elif args.reader == "split":
        extraction = split_extraction(
            args.database,
            window,
            parts=args.parts,
            connections=args.connections,
            hint_bytes=args.batch_hint_bytes,
        )
    else:
        raise ValueError(f"unknown reader {args.reader!r}")
    if args.prefetch:
        extraction.batches = prefetch(extraction.batches)
    return extraction


def copy_request_ids_in_checker() -> None:
    """Prototype fix: the uniqueness check keeps each batch's ``request_id`` column until the
    hour ends. A column imported from ADBC (C data interface) keeps the whole imported batch
    alive, so the hour's peak memory grows by a batch per batch. Hand the check a copy instead."""
    from cz_pipeline.lib import checks

    original = getattr(checks.HourChecker, "_add_request_ids", None)
    if original is None:
        raise RuntimeError("HourChecker._add_request_ids is gone: drop --copy-request-ids")

    def add_copied_ids(self: Any, rows: pa.Table) -> None:
        ids = rows.column("request_id")
        copied = pa.concat_arrays(ids.chunks) if ids.num_chunks else ids
        original(self, pa.table({"request_id": copied}))

    checks.HourChecker._add_request_ids = add_copied_ids  # type: ignore[method-assign]


def combine_tag_chunks_in_normalize() -> None:
    """Prototype fix: ``normalize._split_tags`` wraps its input in ``pa.chunked_array([...])``;
    given a ChunkedArray (a Table column) pyarrow converts it element by element through Python
    (~60 ms per 22,000-row batch). Hand it one contiguous array instead."""
    from cz_pipeline.lib import normalize

    original = getattr(normalize, "_split_tags", None)
    if original is None:
        raise RuntimeError("normalize._split_tags is gone: drop --combine-tag-chunks")

    def split_tags(tags_json: pa.Array | pa.ChunkedArray) -> Any:
        if isinstance(tags_json, pa.ChunkedArray):
            tags_json = tags_json.combine_chunks()
        return original(tags_json)

    normalize._split_tags = split_tags


def sorted_duplicate_check() -> None:
    """Prototype fix: the uniqueness check groups every request_id of the hour (Acero hash
    group-by: ~250 MB and ~1 s per million rows) even when all are unique. Sort and compare
    neighbours first (~60 MB, ~0.3 s per million); group only when a duplicate exists."""
    from cz_pipeline.lib import checks

    original = getattr(checks.HourChecker, "_duplicates", None)
    if original is None:
        raise RuntimeError("HourChecker._duplicates is gone: drop --sorted-duplicate-check")

    def duplicates(self: Any) -> Any:
        chunks = getattr(self, "_request_ids", None)
        if not chunks:
            return original(self)
        ids = pc.drop_null(pa.chunked_array(chunks, chunks[0].type))
        if len(ids) < 2:
            return 0, 0, []
        ordered = pc.take(ids, pc.sort_indices(ids)).combine_chunks()
        repeated = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
        del ordered
        if not pc.any(repeated).as_py():
            return 0, 0, []
        return original(self)

    checks.HourChecker._duplicates = duplicates  # type: ignore[method-assign]


UNIQUE_ID_COLUMNS = ("request_id", "litellm_call_id", "session_id")


def faster_parquet_options() -> None:
    """Prototype fix: zstd level 1 instead of 3 (same file size on this data) and no dictionary
    attempt on the per-request unique id columns."""
    from cz_pipeline.lib import lake
    from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

    lake.PARQUET_OPTIONS.update(
        compression_level=1,
        use_dictionary=[name for name in LAKE_SCHEMA.names if name not in UNIQUE_ID_COLUMNS],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True)
    parser.add_argument("--hour", required=True, help="ISO hour, e.g. 2026-10-01T09:00+00:00")
    parser.add_argument("--reader", choices=READERS, default="ours")
    parser.add_argument("--prefetch", action="store_true", help="read batches on a thread")
    parser.add_argument("--copy-request-ids", action="store_true", help="prototype memory fix")
    parser.add_argument("--combine-tag-chunks", action="store_true", help="prototype CPU fix")
    parser.add_argument("--fast-parquet", action="store_true", help="prototype Parquet options")
    parser.add_argument(
        "--sorted-duplicate-check", action="store_true", help="prototype memory fix"
    )
    parser.add_argument("--batch-hint-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--parts", type=int, default=12)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--keep-lake", help="write the lake here instead of a temporary folder")
    parser.add_argument("--profile", help="write cProfile stats of the timed part to this file")
    args = parser.parse_args(argv)

    if args.copy_request_ids:
        copy_request_ids_in_checker()
    if args.combine_tag_chunks:
        combine_tag_chunks_in_normalize()
    if args.fast_parquet:
        faster_parquet_options()
    if args.sorted_duplicate_check:
        sorted_duplicate_check()
    window = HourWindow.for_hour(datetime.fromisoformat(args.hour))
    baseline_mb = vm_hwm_mb()
    with tempfile.TemporaryDirectory(prefix="cz-bench-lake-") as temporary:
        lake = Lake(args.keep_lake or temporary)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu_started = _cpu_seconds()
        started = time.perf_counter()
        extraction = extraction_for(args, window)
        summaries = extract_to_lake(extraction, window, lake, source=f"bench:{args.reader}")
        seconds = time.perf_counter() - started
        cpu_seconds = _cpu_seconds() - cpu_started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    json.dump(
        {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "rows": sum(s.rows for s in summaries),
            "spend": sum(s.spend for s in summaries),
            "parquet_bytes": sum(s.bytes for s in summaries),
            "held_back": any(getattr(s, "held_back", False) for s in summaries),
            "baseline_rss_mb": baseline_mb,
            "peak_rss_mb": vm_hwm_mb(),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
