"""CBF aggregation + body serialization: ours against LiteLLM's and CloudZero's transformers.

``run(rows)`` builds one synthetic hour of spend-log rows (``bench_cbf.synthetic_hour``, the rows
of our CBF benchmark) and, in one run on those rows, times

* **ours**: ``build_line_items`` + ``render_bodies`` (hourly line items, exact decimals);
* **LiteLLM** 1.110.2 ``CBFTransformer().transform`` + what ``CloudZeroStreamer.send_batched``
  does before the network (group by day, build the payload, httpx's JSON body). It reads
  ``LiteLLM_DailyUserSpend``, never spend logs, so it is fed the daily-table rows those spend
  logs make: grouped by the table's key (UTC date of ``startTime``, user, key hash, model,
  model group, provider) with tokens, spend and request counts summed, and the columns its SQL
  joins in (team id, key alias, team alias, user e-mail);
* **ll2cz** 0.6.2 ``DataProcessor("logs").process_dataframe`` (its ``--source logs`` path: one
  CBF row per spend-log row, columns of its SpendLogs query) + ``pl.DataFrame`` of the records +
  its ``CloudZeroStreamer`` the same way, on the first ``ll2cz_rows`` rows of the same hour (it
  runs at a few hundred rows/s).

Rates are **input spend-log rows per second** for all three, so LiteLLM is credited with the
spend-log rows behind its daily rows; building those daily rows (the proxy's write-time upserts)
is not timed. Each peer runs in ``bench/.peers-venv``, a venv this module creates with pinned
versions (peers.md §5), in a subprocess running ``bench/peer_driver.py``.

Cross-check in the same run: each peer's ``cost/cost`` total equals ours within 1e-9 USD, its
token total and row count equal what peers.md says it makes of these rows, and its request
bodies differ from ours only by its documented rounding of costs to 10 decimals.

    python -m bench.peers --rows 200000 [--ll2cz-rows 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.bench_cbf import HOUR, synthetic_hour
from cz_pipeline.lib.cbf import (
    DEFAULT_GRAIN,
    build_line_items,
    decimal_sum_of_spend,
    line_item_cost_by_hour,
    spend_decimals,
)
from cz_pipeline.lib.cloudzero import render_bodies

BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".peers-venv"
PEER_DRIVER = BENCH / "peer_driver.py"
RESULTS = BENCH / "results"

PEER_REQUIREMENTS: tuple[str, ...] = (
    "litellm==1.110.2",
    "polars==2.1.0",  # litellm's transform imports it; not a dependency of plain litellm
    "rich==15.0.0",  # imported lazily inside CBFTransformer.transform
    "PyYAML==6.0.4",  # ll2cz's provider map and model-name rules
)
PEER_NO_DEPS: tuple[str, ...] = ("ll2cz==0.6.2",)
"""Installed with ``--no-deps``: its psycopg/connectorx only serve its database reader."""

STAMP = "cz-bench-peers.json"
COST_TOLERANCE = Decimal("1e-9")
BODY_ROUNDING = Decimal("5e-11")  # peers print costs with %.10f: at most half a unit per row
TARGET_OURS_OVER_LITELLM = 150.0

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The peer venv


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _wanted_stamp() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "requirements": list(PEER_REQUIREMENTS),
        "no_deps": list(PEER_NO_DEPS),
    }


def peer_env(home: Path) -> dict[str, str]:
    """Environment of a peer process: scratch HOME (ll2cz writes ``~/.ll2cz``) and LiteLLM's
    bundled price map (no download at import, peers.md §5)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(home)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def ensure_peer_venv(venv: Path = PEER_VENV, log: Log = _stderr) -> Path:
    """Create (or reuse) the peers' venv with the pinned versions; return its python."""
    python = _venv_python(venv)
    stamp = venv / STAMP
    wanted = _wanted_stamp()
    if python.exists() and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == wanted:
                return python
        except ValueError:
            pass
    if venv.exists():
        log(f"peers: rebuilding {venv} (pinned versions changed or incomplete install)")
        shutil.rmtree(venv)
    log(f"peers: creating {venv} with {' '.join(PEER_REQUIREMENTS + PEER_NO_DEPS)}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, *PEER_REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", *PEER_NO_DEPS], check=True)
    with tempfile.TemporaryDirectory(prefix="peers-home-") as home:
        subprocess.run(
            [
                str(python),
                "-I",
                "-c",
                "import litellm.integrations.cloudzero.transform, ll2cz.data_processor",
            ],
            check=True,
            env=peer_env(Path(home)),
        )
    stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    return python


# ---------------------------------------------------------------------------------------------
# The rows each peer takes


def daily_user_spend_rows(lake: pa.Table) -> pa.Table:
    """``LiteLLM_DailyUserSpend`` rows made by these spend logs, as LiteLLM's SQL returns them.

    Key of the table: (``date`` = UTC date of ``startTime`` as ``YYYY-MM-DD`` text, user, key
    hash, model, model group, provider); sums of tokens and spend, request counts. The joined
    columns (``team_id``, ``api_key_alias``, ``team_alias``, ``user_email``) are part of the
    grouping, which ``check_daily_key`` proves is no finer than the table's key. ``spend`` is the
    exact decimal sum of the group correctly rounded to float64 (the proxy adds floats as
    requests arrive; only the last bits could differ).
    """
    keys = {
        "date": pc.strftime(lake["start_time"], format="%Y-%m-%d"),
        "user_id": lake["user_id"],
        "api_key": lake["api_key"],
        "model": lake["model"],
        "model_group": lake["model_group"],
        "custom_llm_provider": lake["provider"],
        "team_id": lake["team_id"],
        "api_key_alias": lake["key_alias"],
        "team_alias": lake["team_alias"],
    }
    status = pc.fill_null(lake["status"], "")
    work = pa.table(
        {
            **keys,
            "prompt_tokens": pc.fill_null(lake["prompt_tokens"], 0),
            "completion_tokens": pc.fill_null(lake["completion_tokens"], 0),
            "spend": spend_decimals(lake["spend"]),
            "one": pa.repeat(pa.scalar(1, pa.int64()), lake.num_rows),
            "ok": pc.cast(pc.equal(status, "success"), pa.int64()),
            "failed": pc.cast(pc.equal(status, "failure"), pa.int64()),
            "cache_creation_input_tokens": pc.fill_null(lake["cache_creation_tokens"], 0),
            "cache_read_input_tokens": pc.fill_null(lake["cache_read_tokens"], 0),
        }
    )
    sums = (
        "prompt_tokens",
        "completion_tokens",
        "spend",
        "one",
        "ok",
        "failed",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    )
    agg = work.group_by(list(keys), use_threads=False).aggregate([(c, "sum") for c in sums])
    agg = agg.sort_by([(k, "ascending") for k in ("date", "api_key", "model", "user_id")])
    n = agg.num_rows
    spend_text = pc.cast(agg["spend_sum"], pa.string()).to_pylist()
    hour_start = HOUR.replace(tzinfo=None)
    return pa.table(
        {
            "id": pa.array([f"dus-{i}" for i in range(n)], pa.string()),
            "date": agg["date"],
            "user_id": agg["user_id"],
            "api_key": agg["api_key"],
            "model": agg["model"],
            "model_group": agg["model_group"],
            "custom_llm_provider": agg["custom_llm_provider"],
            "prompt_tokens": agg["prompt_tokens_sum"],
            "completion_tokens": agg["completion_tokens_sum"],
            "spend": pa.array([float(s) for s in spend_text], pa.float64()),
            "api_requests": agg["one_sum"],
            "successful_requests": agg["ok_sum"],
            "failed_requests": agg["failed_sum"],
            "cache_creation_input_tokens": agg["cache_creation_input_tokens_sum"],
            "cache_read_input_tokens": agg["cache_read_input_tokens_sum"],
            "created_at": pa.array([hour_start] * n, pa.timestamp("ms")),
            "updated_at": pa.array([hour_start] * n, pa.timestamp("ms")),
            "team_id": agg["team_id"],
            "api_key_alias": agg["api_key_alias"],
            "team_alias": agg["team_alias"],
            "user_email": pa.nulls(n, pa.string()),
        }
    )


def check_daily_key(daily: pa.Table) -> None:
    """The joined columns must be functions of the daily table's key (one row per key)."""
    key = ["date", "user_id", "api_key", "model", "model_group", "custom_llm_provider"]
    distinct = daily.group_by(key, use_threads=False).aggregate([]).num_rows
    if distinct != daily.num_rows:
        raise AssertionError(
            f"{daily.num_rows} daily rows for {distinct} table keys: the synthetic hour gives a "
            "key more than one team or alias, which LiteLLM's join cannot"
        )


def spend_logs_rows(lake: pa.Table) -> pa.Table:
    """Rows as ll2cz's SpendLogs query returns them (peers.md §1.2, ``--source logs``)."""
    n = lake.num_rows

    def none() -> pa.Array:
        return pa.nulls(n, pa.string())

    def const(value: int) -> pa.Array:
        return pa.repeat(pa.scalar(value, pa.int64()), n)

    naive = pc.cast(lake["start_time"], pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms"))
    return pa.table(
        {
            "request_id": lake["request_id"],
            "call_type": lake["call_type"],
            "api_key": lake["api_key"],
            "spend": lake["spend"],
            "total_tokens": lake["total_tokens"],
            "prompt_tokens": lake["prompt_tokens"],
            "completion_tokens": lake["completion_tokens"],
            "start_time": naive,  # "startTime" is timestamp without time zone (naive UTC)
            "model": lake["model"],
            "model_group": lake["model_group"],
            "custom_llm_provider": lake["provider"],
            "entity_id": lake["user_id"],
            "entity_type": pa.repeat(pa.scalar("user"), n),
            "team_id": lake["team_id"],
            "end_user": lake["end_user"],
            "api_requests": const(1),
            "successful_requests": const(1),
            "failed_requests": const(0),
            "key_name": none(),
            "key_alias": lake["key_alias"],
            "user_alias": none(),
            "user_email": none(),
            "team_alias": lake["team_alias"],
            "enriched_team_id": lake["team_id"],
            "organization_alias": none(),
            "organization_id": lake["organization_id"],
            "date": pc.cast(naive, pa.date32()),
        }
    )


# ---------------------------------------------------------------------------------------------
# Measuring


def _spread(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}


def _exact_body_totals(bodies: list[bytes]) -> tuple[Decimal, int, int]:
    cost = Decimal(0)
    usage = 0
    rows = 0
    with localcontext() as ctx:
        ctx.prec = 200
        for body in bodies:
            for row in json.loads(body)["data"]:
                rows += 1
                cost += Decimal(row["cost/cost"])
                usage += int(row["usage/amount"])
    return cost, usage, rows


def measure_ours(lake: pa.Table, repeat: int) -> dict[str, Any]:
    """``build_line_items`` + ``render_bodies`` on ``lake``: one warm-up, then ``repeat`` times."""
    build_s: list[float] = []
    render_s: list[float] = []
    items = build_line_items(lake, DEFAULT_GRAIN)
    bodies = render_bodies(HOUR, items)
    for _ in range(repeat):
        t0 = time.perf_counter()
        items = build_line_items(lake, DEFAULT_GRAIN)
        t1 = time.perf_counter()
        bodies = render_bodies(HOUR, items)
        t2 = time.perf_counter()
        build_s.append(t1 - t0)
        render_s.append(t2 - t1)
    with localcontext() as ctx:
        ctx.prec = 200
        cost = sum(line_item_cost_by_hour(items).values(), Decimal(0))
    if cost != decimal_sum_of_spend(lake):
        raise AssertionError(f"ours: cost not conserved ({cost} != {decimal_sum_of_spend(lake)})")
    body_cost, body_usage, body_rows = _exact_body_totals(bodies)
    usage = sum(int(v) for v in items["usage/amount"].to_pylist())
    return {
        "input_rows": lake.num_rows,
        "output_rows": items.num_rows,
        "bodies": len(bodies),
        "body_bytes": sum(len(b) for b in bodies),
        "cost": str(cost),
        "usage": usage,
        "body": {"rows": body_rows, "cost": str(body_cost), "usage": body_usage},
        "build": _spread(build_s),
        "render": _spread(render_s),
        "total": _spread([b + r for b, r in zip(build_s, render_s, strict=True)]),
    }


def run_peer(
    python: Path, peer: str, rows_file: Path, repeat: int, home: Path, source: str = "logs"
) -> dict[str, Any]:
    """Run ``peer_driver.py`` in the peer venv and return its JSON (plus the wall time)."""
    command = [
        str(python),
        "-I",  # no script dir on sys.path: bench/profile.py must not shadow the stdlib
        str(PEER_DRIVER),
        "--peer",
        peer,
        "--input",
        str(rows_file),
        "--repeat",
        str(repeat),
        "--source",
        source,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=peer_env(home), check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{peer} driver failed ({done.returncode}): {done.stderr[-3000:]}{done.stdout[-500:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    result["total"] = _spread([r["total_s"] for r in result["runs"]])
    result["transform"] = _spread([r["transform_s"] for r in result["runs"]])
    result["serialize"] = _spread([r["serialize_s"] for r in result["runs"]])
    return result


def _diff(a: str, b: str) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        return Decimal(a) - Decimal(b)


def _e(value: Decimal) -> str:
    return "0" if value == 0 else f"{value:.1E}"


def _dec(text: str) -> str:
    """A decimal string without trailing zeros or exponent."""
    value = Decimal(text)
    return "0" if value == 0 else format(value.normalize(), "f")


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def cross_checks(
    ours: dict[str, Any],
    ours_sample: dict[str, Any],
    litellm: dict[str, Any],
    daily: pa.Table,
    ll2cz: dict[str, Any],
    sample_logs: pa.Table,
) -> list[dict[str, Any]]:
    """Peers against ours and against what peers.md says they make of these rows."""
    checks = []
    kept = pc.greater(daily["successful_requests"], 0)
    dropped = daily.filter(pc.invert(kept))
    kept_rows = daily.num_rows - dropped.num_rows
    dropped_cost = sum((Decimal(repr(v)) for v in dropped["spend"].to_pylist()), Decimal(0))
    kept_tokens = pc.sum(
        pc.add(daily.filter(kept)["prompt_tokens"], daily.filter(kept)["completion_tokens"])
    ).as_py()

    out = litellm["output"]
    d = _diff(out["cost"], ours["cost"])
    checks.append(
        _check(
            "LiteLLM cost/cost total = ours (hour)",
            abs(d) <= COST_TOLERANCE,
            f"{_dec(out['cost'])} vs {_dec(ours['cost'])} (diff {_e(d)}; zero-success daily rows "
            f"it drops, §2.3: {dropped.num_rows}, holding ${_dec(str(dropped_cost))})",
        )
    )
    checks.append(
        _check(
            "LiteLLM rows = daily rows with successful_requests > 0 (§2.3)",
            out["rows"] == kept_rows,
            f"{out['rows']} of {daily.num_rows} daily rows kept, expected {kept_rows}",
        )
    )
    checks.append(
        _check(
            "LiteLLM usage/amount = prompt + completion of kept daily rows (§2.3)",
            out["usage"] == kept_tokens,
            f"{out['usage']} vs {kept_tokens}; ours {ours['usage']} also counts the tokens of "
            f"failed requests ({ours['usage'] - out['usage']} in dropped daily rows)",
        )
    )
    body = litellm["body"]
    bd = _diff(body["cost"], ours["cost"])
    bound = BODY_ROUNDING * body["rows"]
    checks.append(
        _check(
            "LiteLLM body cost within its %.10f rounding of ours (§2.4)",
            abs(bd) <= bound and body["rows"] == out["rows"],
            f"{_dec(body['cost'])} vs {_dec(ours['cost'])} (diff {_e(bd)}, bound {bound:.1E} for "
            f"{body['rows']} rows in {body['bodies']} body/bodies)",
        )
    )

    out = ll2cz["output"]
    d = _diff(out["cost"], ours_sample["cost"])
    checks.append(
        _check(
            "ll2cz cost/cost total = ours (sample)",
            abs(d) <= COST_TOLERANCE,
            f"{_dec(out['cost'])} vs {_dec(ours_sample['cost'])} (diff {_e(d)})",
        )
    )
    logs_tokens = pc.sum(
        pc.add(sample_logs["prompt_tokens"], sample_logs["completion_tokens"])
    ).as_py()
    checks.append(
        _check(
            "ll2cz rows = spend-log rows, usage = prompt + completion (§1.4 logs)",
            out["rows"] == sample_logs.num_rows and out["usage"] == logs_tokens,
            f"{out['rows']} rows, usage {out['usage']} (expected {sample_logs.num_rows}, "
            f"{logs_tokens}; ours {ours_sample['usage']})",
        )
    )
    body = ll2cz["body"]
    bd = _diff(body["cost"], ours_sample["cost"])
    bound = BODY_ROUNDING * body["rows"]
    checks.append(
        _check(
            "ll2cz body cost within its %.10f rounding of ours (§1.5)",
            abs(bd) <= bound and body["rows"] == out["rows"],
            f"{_dec(body['cost'])} vs {_dec(ours_sample['cost'])} (diff {_e(bd)}, "
            f"bound {bound:.1E} for {body['rows']} rows in {body['bodies']} body/bodies)",
        )
    )
    for name, result in (("ours (hour)", ours), ("ours (sample)", ours_sample)):
        checks.append(
            _check(
                f"{name} bodies = line items",
                Decimal(result["body"]["cost"]) == Decimal(result["cost"])
                and result["body"]["usage"] == result["usage"]
                and result["body"]["rows"] == result["output_rows"],
                f"{result['body']['rows']} rows, ${_dec(result['body']['cost'])}, "
                f"{result['body']['usage']} tokens",
            )
        )
    return checks


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


def describe_machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    memory = float("nan")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(memory, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyarrow": metadata.version("pyarrow"),
        "numpy": metadata.version("numpy"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(
    rows: int = 200_000,
    *,
    ll2cz_rows: int = 5_000,
    repeat: int = 3,
    ours_repeat: int = 7,
    venv: Path = PEER_VENV,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Measure ours, LiteLLM's ``CBFTransformer`` and ll2cz's ``DataProcessor`` on one hour.

    Returns settings, machine, per-implementation timings (median/min/max of ``total``, plus
    transform and serialization separately), input rows/s, ratios and the cross-checks
    (``checks_ok`` is False if any failed).
    """
    if rows <= 0 or ll2cz_rows <= 0 or repeat <= 0 or ours_repeat <= 0:
        raise ValueError("rows, ll2cz_rows, repeat and ours_repeat must be positive")
    ll2cz_rows = min(ll2cz_rows, rows)
    started = datetime.now(UTC)
    machine = describe_machine()
    python = ensure_peer_venv(venv, log)

    lake = synthetic_hour(rows)
    sample = lake.slice(0, ll2cz_rows)
    daily = daily_user_spend_rows(lake)
    check_daily_key(daily)
    logs = spend_logs_rows(sample)

    log(f"peers: ours on {rows:,} rows x {ours_repeat}")
    ours = measure_ours(lake, ours_repeat)
    ours_sample = measure_ours(sample, ours_repeat)

    with tempfile.TemporaryDirectory(prefix="cz-bench-peers-") as scratch:
        tmp = Path(scratch)
        home = tmp / "home"
        home.mkdir()
        pq.write_table(daily, tmp / "daily_user_spend.parquet")
        pq.write_table(logs, tmp / "spend_logs.parquet")
        log(f"peers: LiteLLM CBFTransformer on {daily.num_rows:,} daily rows x {repeat}")
        litellm = run_peer(python, "litellm", tmp / "daily_user_spend.parquet", repeat, home)
        log(f"peers: ll2cz DataProcessor('logs') on {ll2cz_rows:,} rows x {repeat}")
        ll2cz = run_peer(python, "ll2cz", tmp / "spend_logs.parquet", repeat, home, "logs")

    litellm["input_rows_counted"] = rows  # the spend-log rows behind its daily rows
    ll2cz["input_rows_counted"] = ll2cz_rows
    ours_rate = _rate(rows, ours["total"]["median_s"])
    ours_slowest = _rate(rows, ours["total"]["max_s"])
    implementations = {  # (input spend-log rows counted, rows the implementation is fed)
        "ours": (rows, rows, ours["total"]),
        "ours_sample": (ll2cz_rows, ll2cz_rows, ours_sample["total"]),
        "litellm": (rows, daily.num_rows, litellm["total"]),
        "ll2cz": (ll2cz_rows, ll2cz_rows, ll2cz["total"]),
    }
    rates: dict[str, dict[str, float]] = {}
    for name, (counted, fed, total) in implementations.items():
        rates[name] = {
            "median": _rate(counted, total["median_s"]),
            "slowest": _rate(counted, total["max_s"]),
            "fastest": _rate(counted, total["min_s"]),
            "fed_rows_median": _rate(fed, total["median_s"]),
        }
    ratios = {
        peer: {
            "peer_over_ours": rates[peer]["median"] / ours_rate,
            "ours_over_peer": ours_rate / rates[peer]["median"],
            "ours_over_peer_worst_case": ours_slowest / rates[peer]["fastest"],
            "ours_over_peer_per_fed_row": ours_rate / rates[peer]["fed_rows_median"],
        }
        for peer in ("litellm", "ll2cz")
    }
    checks = cross_checks(ours, ours_sample, litellm, daily, ll2cz, logs)
    target = {
        "ours_over_litellm_target": TARGET_OURS_OVER_LITELLM,
        "ours_over_litellm": ratios["litellm"]["ours_over_peer"],
        "met": ratios["litellm"]["ours_over_peer"] >= TARGET_OURS_OVER_LITELLM,
        "met_worst_case": ratios["litellm"]["ours_over_peer_worst_case"]
        >= TARGET_OURS_OVER_LITELLM,
    }
    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine,
        "settings": {
            "rows": rows,
            "ll2cz_rows": ll2cz_rows,
            "repeat": repeat,
            "ours_repeat": ours_repeat,
            "hour": HOUR.isoformat(),
            "daily_rows": daily.num_rows,
            "peer_venv": str(venv),
            "peer_requirements": [*PEER_REQUIREMENTS, *(f"{r} (--no-deps)" for r in PEER_NO_DEPS)],
        },
        "ours": ours,
        "ours_sample": ours_sample,
        "litellm": litellm,
        "ll2cz": ll2cz,
        "rates_rows_per_s": rates,
        "ratios": ratios,
        "target": target,
        "checks": checks,
        "checks_ok": all(c["ok"] for c in checks),
    }


# ---------------------------------------------------------------------------------------------
# Report


def _s(x: float) -> str:
    return f"{x:.4f}" if x < 10 else f"{x:.2f}"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def render_markdown(result: dict[str, Any], command: str | None = None) -> str:
    """The results table for bench/README.md."""
    s = result["settings"]
    m = result["machine"]
    rates = result["rates_rows_per_s"]
    ratios = result["ratios"]
    ours, litellm, ll2cz = result["ours"], result["litellm"], result["ll2cz"]
    versions = litellm["versions"]
    lines = []
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"- {m['nproc']} cores (`nproc`), {m['cpu']}, {m['memory_gib']} GiB RAM, Linux "
        f"{m['kernel']}, load average at start "
        f"{', '.join(str(x) for x in m['load_average_at_start'])}; run {result['started_at']}",
        f"- ours: Python {m['python']}, pyarrow {m['pyarrow']}, numpy {m['numpy']}; peers in "
        f"`bench/.peers-venv`: Python {versions['python']}, litellm {versions['litellm']}, "
        f"ll2cz {versions['ll2cz']}, polars {versions['polars']}, rich {versions['rich']}, "
        f"PyYAML {versions['PyYAML']}, httpx {versions['httpx']}",
        f"- input: `bench_cbf.synthetic_hour({s['rows']})`, one UTC hour "
        f"({s['hour']}); LiteLLM gets the {s['daily_rows']:,} `LiteLLM_DailyUserSpend` rows "
        f"those {s['rows']:,} spend-log rows make; ll2cz gets the first {s['ll2cz_rows']:,} "
        f"spend-log rows of the same hour",
        f"- seconds: median (min-max) of {s['ours_repeat']} repetitions for ours (after one "
        f"warm-up) and {s['repeat']} for each peer (after a warm-up on its first "
        f"{litellm['warmup_rows']} rows); each = transform + serialization to the request "
        "bodies; input rows/s = spend-log rows of the hour (or of the sample) per second",
        "",
        "| implementation | rows fed to it | input rows | output rows | bodies | seconds | "
        "input rows/s | fed rows/s | peer ÷ ours | ours ÷ peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def secs(total: dict[str, float]) -> str:
        return f"{_s(total['median_s'])} ({_s(total['min_s'])}-{_s(total['max_s'])})"

    lines.append(
        f"| ours: `build_line_items` + `render_bodies` | {s['rows']:,} spend-log | "
        f"{s['rows']:,} | {ours['output_rows']:,} hourly | {ours['bodies']} | "
        f"{secs(ours['total'])} | {_n(rates['ours']['median'])} | "
        f"{_n(rates['ours']['fed_rows_median'])} | 1 | 1 |"
    )
    lines.append(
        f"| LiteLLM `CBFTransformer` + streamer body | {litellm['input_rows']:,} daily | "
        f"{s['rows']:,} | {litellm['output']['rows']:,} daily | {litellm['body']['bodies']} | "
        f"{secs(litellm['total'])} | {_n(rates['litellm']['median'])} | "
        f"{_n(rates['litellm']['fed_rows_median'])} | "
        f"{ratios['litellm']['peer_over_ours']:.4f} | "
        f"**{ratios['litellm']['ours_over_peer']:,.1f}x** |"
    )
    lines.append(
        f"| ll2cz `DataProcessor('logs')` + streamer body | {ll2cz['input_rows']:,} spend-log | "
        f"{s['ll2cz_rows']:,} (sample) | {ll2cz['output']['rows']:,} per request | "
        f"{ll2cz['body']['bodies']} | {secs(ll2cz['total'])} | {_n(rates['ll2cz']['median'])} | "
        f"{_n(rates['ll2cz']['fed_rows_median'])} | {ratios['ll2cz']['peer_over_ours']:.6f} | "
        f"**{ratios['ll2cz']['ours_over_peer']:,.0f}x** |"
    )
    so = result["ours_sample"]
    lines.append(
        f"| (ours on the ll2cz sample) | {s['ll2cz_rows']:,} spend-log | {s['ll2cz_rows']:,} | "
        f"{so['output_rows']:,} hourly | {so['bodies']} | {secs(so['total'])} | "
        f"{_n(rates['ours_sample']['median'])} | {_n(rates['ours_sample']['fed_rows_median'])} "
        "| | |"
    )
    split = (
        f"Split (median s): ours build {_s(ours['build']['median_s'])} + render "
        f"{_s(ours['render']['median_s'])}; LiteLLM transform "
        f"{_s(litellm['transform']['median_s'])} + serialize "
        f"{_s(litellm['serialize']['median_s'])}; ll2cz transform "
        f"{_s(ll2cz['transform']['median_s'])} + serialize {_s(ll2cz['serialize']['median_s'])}."
    )
    target = result["target"]
    lines += [
        "",
        split,
        "",
        f"Target ours >= {target['ours_over_litellm_target']:.0f}x LiteLLM's transformer per "
        f"input row: **{'met' if target['met'] else 'NOT met'}** at "
        f"{target['ours_over_litellm']:,.1f}x (ratio of medians); worst case (our slowest vs "
        f"its fastest repetition) {ratios['litellm']['ours_over_peer_worst_case']:,.1f}x, "
        f"{'met' if target['met_worst_case'] else 'not met'}. Counted per row *fed* to it "
        f"(one daily row stands for {s['rows'] / s['daily_rows']:.1f} spend-log rows here) "
        f"it would be {ratios['litellm']['ours_over_peer_per_fed_row']:,.0f}x. ll2cz worst "
        f"case {ratios['ll2cz']['ours_over_peer_worst_case']:,.0f}x. Load average at end "
        f"{', '.join(str(x) for x in result['load_average_at_end'])}.",
        "",
        "Cross-checks (same run):",
        "",
    ]
    for check in result["checks"]:
        lines.append(
            f"- {'ok' if check['ok'] else '**FAILED**'}: {check['name']}: {check['detail']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="spend-log rows in the hour")
    parser.add_argument(
        "--ll2cz-rows", type=int, default=5_000, help="sample of the hour for ll2cz (slow)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per peer")
    parser.add_argument("--ours-repeat", type=int, default=7, help="repetitions of ours")
    parser.add_argument("--venv", type=Path, default=PEER_VENV, help="peers' virtual env")
    parser.add_argument(
        "--out", type=Path, help="results JSON (default bench/results/peers-<UTC>.json)"
    )
    args = parser.parse_args(argv)
    command = "python -m bench.peers " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = run(
        args.rows,
        ll2cz_rows=args.ll2cz_rows,
        repeat=args.repeat,
        ours_repeat=args.ours_repeat,
        venv=args.venv,
    )
    result["command"] = command
    markdown = render_markdown(result, command)
    out = args.out or RESULTS / f"peers-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    _stderr(f"results: {out} and {out.with_suffix('.md')}")
    return 0 if result["checks_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
