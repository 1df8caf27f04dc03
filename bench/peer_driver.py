"""Time one peer's CBF transform + body serialization; runs inside ``bench/.peers-venv``.

Started by ``bench/peers.py`` as ``<peer venv>/bin/python -I bench/peer_driver.py ...``. It imports
nothing from the project (the peer venv has none of it) and prints one JSON object on stdout; the
peers' own console output (rich) goes to stderr.

Peers (see /work/shared/reference/peers.md):

* ``litellm``: ``litellm.integrations.cloudzero.transform.CBFTransformer().transform(df)`` on rows
  shaped like its ``LiteLLM_DailyUserSpend`` query (§2.2, §5), then what ``CloudZeroStreamer
  .send_batched`` does before the network: ``_group_by_date`` and, per day,
  ``_prepare_batch_payload`` plus httpx's encoding of ``json=payload`` (the request body).
* ``ll2cz``: ``ll2cz.data_processor.DataProcessor(source).process_dataframe(df)`` and
  ``pl.DataFrame(cbf_records)`` (the direct path of ``transmit``, §1.4), then
  ``ll2cz.output.CloudZeroStreamer`` the same way.

Timed per repetition: the transform (``transform_s``: transformer construction + transform) and
the serialization to request bodies (``serialize_s``). Not timed: interpreter start, imports,
reading the Parquet file, a warm-up on the first ``WARMUP_ROWS`` rows, and the totals computed for
the cross-check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal, localcontext
from importlib import metadata
from typing import Any

DROPS_URL = "https://api.cloudzero.com/v2/connections/billing/anycost/bench/billing_drops"
OPERATION = "replace_hourly"
PACKAGES = ("litellm", "ll2cz", "polars", "rich", "PyYAML", "httpx")
WARMUP_ROWS = 500


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _exact(value: Any) -> Decimal:
    """A number as an exact decimal of what it prints as (floats: shortest repr)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def _totals(frame: Any) -> dict[str, Any]:
    """Exact ``cost/cost`` and ``usage/amount`` totals of a transform's output frame."""
    if frame.height == 0:
        return {"rows": 0, "cost": "0", "usage": 0}
    with localcontext() as ctx:
        ctx.prec = 200
        cost = sum((_exact(v) for v in frame["cost/cost"].to_list()), Decimal(0))
    usage = sum(int(v or 0) for v in frame["usage/amount"].to_list())
    return {"rows": frame.height, "cost": str(cost), "usage": usage}


def _body_totals(bodies: list[bytes]) -> dict[str, Any]:
    """Totals of the request bodies as CloudZero would read them (strings -> decimals)."""
    rows = 0
    usage = 0
    starts: set[str] = set()
    months: set[str] = set()
    with localcontext() as ctx:
        ctx.prec = 200
        cost = Decimal(0)
        for body in bodies:
            payload = json.loads(body)
            months.add(str(payload["month"]))
            for row in payload["data"]:
                rows += 1
                cost += Decimal(str(row.get("cost/cost", "0")))
                usage += int(row.get("usage/amount", "0") or 0)
                starts.add(str(row.get("time/usage_start")))
    first = json.loads(bodies[0])["data"][0] if bodies and json.loads(bodies[0])["data"] else None
    return {
        "bodies": len(bodies),
        "body_bytes": sum(len(b) for b in bodies),
        "rows": rows,
        "cost": str(cost),
        "usage": usage,
        "months": sorted(months),
        "distinct_usage_start": len(starts),
        "usage_start_examples": sorted(starts)[:3],
        "first_row": first,
    }


def _bodies(streamer: Any, cbf: Any) -> list[bytes]:
    """What ``send_batched`` builds before posting: one JSON body per UTC day."""
    import httpx

    bodies = []
    for day, batch in streamer._group_by_date(cbf).items():
        payload = streamer._prepare_batch_payload(day, batch, OPERATION)
        bodies.append(httpx.Request("POST", DROPS_URL, json=payload).content)
    return bodies


def _litellm(frame: Any) -> tuple[Callable[[], Any], Callable[[Any], list[bytes]]]:
    from litellm.integrations.cloudzero.cz_stream_api import CloudZeroStreamer
    from litellm.integrations.cloudzero.transform import CBFTransformer

    def transform() -> Any:
        return CBFTransformer().transform(frame)

    def serialize(cbf: Any) -> list[bytes]:
        return _bodies(CloudZeroStreamer("bench-key", "bench", user_timezone=None), cbf)

    return transform, serialize


def _ll2cz(frame: Any, source: str) -> tuple[Callable[[], Any], Callable[[Any], list[bytes]]]:
    import polars as pl
    from ll2cz.data_processor import DataProcessor
    from ll2cz.output import CloudZeroStreamer

    def transform() -> Any:
        _czrns, records, _errors = DataProcessor(source=source).process_dataframe(frame)
        return pl.DataFrame(records)

    def serialize(cbf: Any) -> list[bytes]:
        return _bodies(CloudZeroStreamer("bench-key", "bench", None), cbf)

    return transform, serialize


def measure(peer: str, path: str, repeat: int, source: str) -> dict[str, Any]:
    started = time.perf_counter()
    import polars as pl

    frame = pl.read_parquet(path)

    def make(rows: Any) -> tuple[Callable[[], Any], Callable[[Any], list[bytes]]]:
        return _litellm(rows) if peer == "litellm" else _ll2cz(rows, source)

    transform, serialize = make(frame)
    setup_s = time.perf_counter() - started

    runs: list[dict[str, float]] = []
    cbf: Any = None
    bodies: list[bytes] = []
    with contextlib.redirect_stdout(sys.stderr):  # the peers print progress with rich
        # Warm-up on the first rows: lazy imports (rich inside transform), first-call caches.
        warm_transform, warm_serialize = make(frame.head(WARMUP_ROWS))
        warm_serialize(warm_transform())
        for _ in range(repeat):
            t0 = time.perf_counter()
            cbf = transform()
            t1 = time.perf_counter()
            bodies = serialize(cbf)
            t2 = time.perf_counter()
            runs.append({"transform_s": t1 - t0, "serialize_s": t2 - t1, "total_s": t2 - t0})
    return {
        "peer": peer,
        "source": source if peer == "ll2cz" else "daily table (CBFTransformer)",
        "input_rows": frame.height,
        "input_columns": frame.columns,
        "setup_s": setup_s,
        "warmup_rows": min(WARMUP_ROWS, frame.height),
        "runs": runs,
        "output": _totals(cbf),
        "output_columns": cbf.columns,
        "body": _body_totals(bodies),
        "versions": _versions(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=("litellm", "ll2cz"), required=True)
    parser.add_argument("--input", required=True, help="Parquet file of the rows the peer takes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", choices=("logs", "usertable"), default="logs", help="ll2cz")
    args = parser.parse_args(argv)
    result = measure(args.peer, args.input, args.repeat, args.source)
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
