"""Extraction benchmark: our extract + normalize + Parquet write against ``psql`` binary COPY.

The floor is the production query itself, sent through ``psql`` as
``COPY (<window_query(hour)>) TO STDOUT (FORMAT binary)`` with the output thrown away: PostgreSQL
does all the per-row work it does for us (de-TOAST and parse the metadata, build the binary
tuples) and nothing else happens on the client. It is measured with and without the query's
``ORDER BY``. For context the scalar columns alone (no metadata parsing) are measured too.

Ours runs ``LiteLLMPostgresSource(url).extract(hour)`` + ``extract_to_lake`` into a temporary lake
in a fresh interpreter per repetition (``bench/extract_child.py``), so peak RSS is per run. All
measurements of one repetition run back to back (interleaved), to share the machine's noise.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2

from bench.database import LoadedHour
from cz_pipeline.lib.hours import HourWindow
from cz_pipeline.lib.sources.litellm_postgres import window_query

REPO = Path(__file__).resolve().parent.parent
_ORDER_BY = "\nORDER BY q.start_time"
_INNER_ORDER_BY = 'ORDER BY s."startTime" '
# A select-list line that reads only the table's own columns, e.g. '  s."startTime" AS start_time,'.
_SCALAR_COLUMN = re.compile(r'^  s\.("\w+"|\w+)(::\w+)? AS \w+,?$')


@dataclass
class Series:
    """Repeated measurements of one thing; ``seconds`` in run order."""

    name: str
    label: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.seconds:
            data["median_s"] = self.median
            data["min_s"] = min(self.seconds)
            data["max_s"] = max(self.seconds)
        if self.peak_rss_mb:
            data["peak_rss_mb_max"] = max(self.peak_rss_mb)
        return data


# ------------------------------------------------------------------------------------------
# Queries
# ------------------------------------------------------------------------------------------


def exact_query(window: HourWindow) -> str:
    """The production query, verbatim."""
    return window_query(window)


def unordered_query(window: HourWindow) -> str:
    """The production query without its ``ORDER BY "startTime"`` (inner and outer)."""
    query = window_query(window)
    if not query.endswith(_ORDER_BY) or query.count(_INNER_ORDER_BY) != 1:
        raise RuntimeError("window_query no longer orders as bench.extract expects")
    return query[: -len(_ORDER_BY)].replace(_INNER_ORDER_BY, "")


def scalar_query(window: HourWindow) -> str:
    """The production query's scalar columns only: no metadata read at all."""
    lines = unordered_query(window).split("\n")
    table = [line for line in lines if line.startswith('FROM "')]
    where = [line for line in lines if line.startswith("WHERE ")]
    columns = [
        line.strip().rstrip(",")
        for line in lines
        if _SCALAR_COLUMN.match(line) and not line.startswith("  s.metadata ")
    ]
    if len(table) != 1 or len(where) != 1 or not columns:
        raise RuntimeError("window_query changed shape; update bench.extract.scalar_query")
    return "SELECT\n  " + ",\n  ".join(columns) + "\n" + table[0] + "\n" + where[0]


def copy_command(query: str) -> str:
    return f"COPY ({query}) TO STDOUT (FORMAT binary)"


# ------------------------------------------------------------------------------------------
# Runners
# ------------------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


class ServerCpu:
    """CPU seconds of the PostgreSQL backends serving this database while the block runs.

    Wall time on a shared 2-core machine swings with other people's load; the backends' CPU
    time much less. A thread lists the database's backends every 50 ms and reads their
    /proc/<pid>/stat (PostgreSQL must run on this machine, readable by this user); up to 50 ms of
    a backend that exits during the block is missed. Only meaningful when nothing else uses the
    benchmark database.
    """

    _BACKENDS = (
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def __init__(self, url: str, interval_s: float = 0.05) -> None:
        self._url = url
        self._interval_s = interval_s
        self._baseline: dict[int, float] = {}  # backends present before the block
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seconds = float("nan")

    def _sample(self, cursor: Any, into: dict[int, float]) -> None:
        cursor.execute(self._BACKENDS)
        for (pid,) in cursor.fetchall():
            cpu = _process_cpu_s(pid)
            if cpu is not None:
                into[pid] = cpu

    def __enter__(self) -> ServerCpu:
        connection = psycopg2.connect(self._url)
        connection.autocommit = True
        cursor = connection.cursor()
        self._sample(cursor, self._baseline)

        def poll() -> None:
            try:
                while not self._stop.wait(self._interval_s):
                    self._sample(cursor, self._last)
            finally:
                connection.close()

        self._thread = threading.Thread(target=poll, name="server-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.seconds = sum(
            max(0.0, cpu - self._baseline.get(pid, 0.0)) for pid, cpu in self._last.items()
        )


def psql_argv(url: str, sql: str) -> list[str]:
    return ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]


def time_psql_copy(url: str, sql: str) -> tuple[float, float]:
    """(wall seconds, psql CPU seconds) of ``psql -c "<COPY ...>" > /dev/null``."""
    started = time.perf_counter()
    process = subprocess.Popen(psql_argv(url, sql), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, "psql")
    return seconds, usage.ru_utime + usage.ru_stime


def copy_bytes(url: str, sql: str) -> int:
    """Bytes of the COPY stream (an untimed run that also warms the caches)."""
    total = 0
    with subprocess.Popen(psql_argv(url, sql), stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read(1 << 20):
            total += len(chunk)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, "psql")
    return total


@dataclass(frozen=True)
class ChildRun:
    seconds: float  # extract + normalize + write, measured inside the child
    process_seconds: float  # whole child process, interpreter start and imports included
    rows: int
    spend: float
    parquet_bytes: int
    baseline_rss_mb: float  # VmHWM after imports, before extracting
    peak_rss_mb: float  # VmHWM at the end of the child, read inside it
    held_back: bool  # a blocking check sent the hour to quarantine
    cpu_s: float  # user + system CPU seconds of the timed part (all threads)
    process_cpu_s: float  # the same for the whole child process, imports included


def run_child(
    url: str,
    loaded: LoadedHour,
    options: Sequence[str] = (),
    keep_lake: str | None = None,
    profile: str | None = None,
) -> ChildRun:
    argv = [
        sys.executable,
        "-m",
        "bench.extract_child",
        "--database",
        url,
        "--hour",
        loaded.hour.isoformat(),
        *options,
    ]
    if keep_lake:
        argv += ["--keep-lake", keep_lake]
    if profile:
        argv += ["--profile", profile]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process_seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(
            f"extract child {' '.join(options)} failed with exit code {process.returncode}"
        )
    result = json.loads(output)
    if result["rows"] != loaded.rows:
        raise RuntimeError(
            f"{' '.join(options) or 'ours'} wrote {result['rows']} rows, expected {loaded.rows}"
        )
    return ChildRun(
        seconds=result["seconds"],
        process_seconds=process_seconds,
        rows=result["rows"],
        spend=result["spend"],
        parquet_bytes=result["parquet_bytes"],
        baseline_rss_mb=result["baseline_rss_mb"],
        # Not usage.ru_maxrss: Linux folds the parent's peak at fork time into it.
        peak_rss_mb=result["peak_rss_mb"],
        held_back=bool(result.get("held_back", False)),
        cpu_s=result["cpu_seconds"],
        process_cpu_s=usage.ru_utime + usage.ru_stime,
    )


def explain(url: str, query: str) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS)``: the server's own execution time, no rows sent."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}")
            plan = cursor.fetchone()[0][0]
    finally:
        connection.close()

    def nodes(node: dict[str, Any]) -> list[str]:
        label = node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
        return [label] + [n for child in node.get("Plans", []) for n in nodes(child)]

    jit = plan.get("JIT", {}).get("Timing", {}).get("Total")
    top = plan["Plan"]
    sort_space = (
        f"{top.get('Sort Space Used')} kB {top.get('Sort Space Type')}"
        if "Sort Method" in top
        else None
    )
    return {
        "execution_s": plan["Execution Time"] / 1000,
        "planning_s": plan["Planning Time"] / 1000,
        "jit_s": jit / 1000 if jit is not None else None,
        "nodes": nodes(plan["Plan"]),
        "sort": top.get("Sort Method"),
        "sort_space": sort_space,
    }


# ------------------------------------------------------------------------------------------
# Prototypes: variants of our extraction measured next to it
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    options: tuple[str, ...] = ()


OURS = Variant("ours", "ours: extract + normalize + Parquet, production code")
_FIXES = (
    "--copy-request-ids",
    "--sorted-duplicate-check",
    "--combine-tag-chunks",
    "--fast-parquet",
)
PROTOTYPES: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(
            "copyids",
            "prototype copyids: ours, uniqueness check keeps a copy of request_id",
            ("--copy-request-ids",),
        ),
        Variant(
            "lowmem",
            "prototype lowmem: copyids + sort-based request_id uniqueness check",
            ("--copy-request-ids", "--sorted-duplicate-check"),
        ),
        Variant(
            "tagsfix",
            "prototype tagsfix: ours, _split_tags gets one contiguous array",
            ("--combine-tag-chunks",),
        ),
        Variant(
            "parquet",
            "prototype parquet: ours, zstd level 1, no dictionary on unique ids",
            ("--fast-parquet",),
        ),
        Variant("fixes", "prototype fixes: lowmem + tagsfix + parquet", _FIXES),
        Variant(
            "prefetch",
            "prototype prefetch: fixes + ADBC batches read ahead on a thread",
            (*_FIXES, "--prefetch"),
        ),
        Variant(
            "split2",
            "prototype split2: fixes + 2 half-hour sub-windows on 2 connections",
            (*_FIXES, "--reader", "split", "--parts", "2", "--connections", "2"),
        ),
        Variant(
            "split12",
            "prototype split12: fixes + 12 five-minute sub-windows on 2 connections",
            (*_FIXES, "--reader", "split", "--parts", "12", "--connections", "2"),
        ),
        Variant(
            "hint1m",
            "prototype hint1m: fixes + ADBC batch_size_hint 1 MB",
            (*_FIXES, "--batch-hint-bytes", str(1 << 20)),
        ),
        Variant(
            "hint64m",
            "prototype hint64m: fixes + ADBC batch_size_hint 64 MB",
            (*_FIXES, "--batch-hint-bytes", str(64 << 20)),
        ),
    )
}
DEFAULT_PROTOTYPES: tuple[str, ...] = ()
SCALING_PROTOTYPES = ("lowmem", "fixes", "prefetch", "split12")


# ------------------------------------------------------------------------------------------
# The measurement of one loaded hour
# ------------------------------------------------------------------------------------------


@dataclass
class ExtractResult:
    loaded: LoadedHour
    series: dict[str, Series]
    copy_bytes: dict[str, int]
    explain: dict[str, Any]
    parquet_bytes: int
    baseline_rss_mb: float
    kept_lake: str | None
    load_average: list[float]

    def ratio(self, floor: str, variant: str = "ours") -> float:
        return self.series[variant].median / self.series[floor].median

    def paired_ratio(self, floor: str, variant: str = "ours") -> float:
        """Median over repetitions of variant / floor measured back to back: steadier than the
        ratio of medians when the machine's load drifts during the run."""
        pairs = zip(self.series[variant].seconds, self.series[floor].seconds, strict=True)
        return statistics.median(ours / base for ours, base in pairs)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExtractResult:
        """Rebuild a result from :meth:`as_json` (to re-render a saved run)."""
        load = data["load"]
        loaded = LoadedHour(
            hour=datetime.fromisoformat(data["hour"]),
            rows=data["rows"],
            padding_bytes=load["padding_bytes"],
            seed=load["seed"],
            reused=load["reused"],
            shape=load.get("shape", "padded"),
            load_s=load["load_s"],
            table_bytes=load["spend_logs_table_bytes"],
            metadata_bytes_avg=load["metadata_bytes_avg"],
        )
        series = {
            name: Series(s["name"], s["label"], s["seconds"], s["peak_rss_mb"], s["extra"])
            for name, s in data["series"].items()
        }
        return cls(
            loaded=loaded,
            series=series,
            copy_bytes=data["copy_bytes"],
            explain=data["explain_exact_query"],
            parquet_bytes=data["parquet_bytes"],
            baseline_rss_mb=data["baseline_rss_mb"],
            kept_lake=None,
            load_average=data.get("load_average_1m_after_each_repetition", []),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "hour": self.loaded.hour.isoformat(),
            "rows": self.loaded.rows,
            "load": {
                "reused": self.loaded.reused,
                "shape": self.loaded.shape,
                "load_s": self.loaded.load_s,
                "padding_bytes": self.loaded.padding_bytes,
                "metadata_bytes_avg": self.loaded.metadata_bytes_avg,
                "spend_logs_table_bytes": self.loaded.table_bytes,
                "seed": self.loaded.seed,
            },
            "series": {name: s.as_json() for name, s in self.series.items()},
            "copy_bytes": self.copy_bytes,
            "explain_exact_query": self.explain,
            "parquet_bytes": self.parquet_bytes,
            "baseline_rss_mb": self.baseline_rss_mb,
            "load_average_1m_after_each_repetition": self.load_average,
            "ratios": {
                "ours_vs_floor_exact": self.ratio("floor_exact"),
                "ours_vs_floor_unordered": self.ratio("floor_unordered"),
                "ours_vs_floor_exact_paired": self.paired_ratio("floor_exact"),
                **{
                    f"{name}_vs_floor_exact": self.ratio("floor_exact", name)
                    for name in self.series
                    if name in PROTOTYPES
                },
            },
        }


def measure_extract(
    url: str,
    loaded: LoadedHour,
    repeat: int,
    prototypes: Sequence[str] = (),
    keep_lake: str | None = None,
    with_scalar: bool = True,
    log: Callable[[str], None] = print,
) -> ExtractResult:
    window = loaded.window
    queries = {
        "floor_exact": exact_query(window),
        "floor_unordered": unordered_query(window),
    }
    if with_scalar:
        queries["scalar_only"] = scalar_query(window)
    labels = {
        "floor_exact": "floor: psql COPY binary of window_query (with ORDER BY)",
        "floor_unordered": "floor: psql COPY binary of window_query without ORDER BY",
        "scalar_only": "context: psql COPY binary, scalar columns only (no metadata)",
    }
    series = {name: Series(name, labels[name]) for name in queries}
    variants = [OURS, *(PROTOTYPES[name] for name in prototypes)]
    for variant in variants:
        series[variant.name] = Series(variant.name, variant.label)

    log(f"  warm-up: {loaded.rows:,} rows, COPY stream sizes ...")
    sizes = {name: copy_bytes(url, copy_command(query)) for name, query in queries.items()}
    plan = explain(url, queries["floor_exact"])
    parquet_bytes = 0
    baseline = 0.0
    load_average: list[float] = []
    for repetition in range(1, repeat + 1):
        for name, query in queries.items():
            with ServerCpu(url) as server:
                seconds, cpu = time_psql_copy(url, copy_command(query))
            series[name].seconds.append(seconds)
            series[name].extra.setdefault("client_cpu_s", []).append(round(cpu, 3))
            series[name].extra.setdefault("server_cpu_s", []).append(round(server.seconds, 3))
        for variant in variants:
            keep = keep_lake if variant is OURS and repetition == repeat else None
            with ServerCpu(url) as server:
                run = run_child(url, loaded, variant.options, keep_lake=keep)
            target = series[variant.name]
            target.seconds.append(run.seconds)
            target.peak_rss_mb.append(run.peak_rss_mb)
            target.extra.setdefault("process_seconds", []).append(run.process_seconds)
            target.extra.setdefault("parquet_bytes", []).append(run.parquet_bytes)
            target.extra.setdefault("spend", []).append(run.spend)
            target.extra.setdefault("held_back", []).append(run.held_back)
            target.extra.setdefault("client_cpu_s", []).append(round(run.cpu_s, 3))
            target.extra.setdefault("server_cpu_s", []).append(round(server.seconds, 3))
            if variant is OURS:
                parquet_bytes = run.parquet_bytes
                baseline = run.baseline_rss_mb
        load_average.append(round(os.getloadavg()[0], 2))
        log(
            f"  repetition {repetition}/{repeat} (load {load_average[-1]}): "
            + ", ".join(f"{name} {s.seconds[-1]:.2f}s" for name, s in series.items())
        )
    reference = series["ours"].extra["spend"][0]
    for variant in variants:
        if any(
            abs(s - reference) > 1e-6 * max(1.0, abs(reference))
            for s in series[variant.name].extra["spend"]
        ):
            raise RuntimeError(f"{variant.name} read a different total spend than ours")
    return ExtractResult(
        loaded=loaded,
        series=series,
        copy_bytes=sizes,
        explain=plan,
        parquet_bytes=parquet_bytes,
        baseline_rss_mb=baseline,
        kept_lake=keep_lake,
        load_average=load_average,
    )


def temporary_lake() -> str:
    return tempfile.mkdtemp(prefix="cz-bench-kept-lake-")
