"""Benchmark: one lake hour -> CBF line items -> request bodies.

``run(rows)`` builds a synthetic hour in ``LAKE_SCHEMA`` with numpy (about 6,000 grain
combinations, awkward float spends, a few failures) and times ``build_line_items`` and
``render_bodies``. Target: under 0.25 s for 200,000 rows on a 2-core machine.

    python bench/bench_cbf.py [rows]
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from decimal import Decimal, localcontext

import numpy as np
import pyarrow as pa

from cz_pipeline.lib.cbf import (
    DEFAULT_GRAIN,
    build_line_items,
    decimal_sum_of_spend,
    line_item_cost_by_hour,
)
from cz_pipeline.lib.cloudzero import render_bodies
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

HOUR = datetime(2025, 1, 31, 23, tzinfo=UTC)
MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0",
    "ft:gpt-4o:org::abc",
    "claude-3-5-sonnet-20241022",
    "text-embedding-3-small",
    "gemini/gemini-1.5-pro",
    "mistral/mistral-large-latest",
]
PROVIDERS = ["openai", "openai", "bedrock", "openai", "anthropic", "openai", "gemini", "mistral"]


def synthetic_hour(rows: int, combinations: int = 6_000, seed: int = 7) -> pa.Table:
    """``rows`` requests in one hour spread over about ``combinations`` grain combinations."""
    rng = np.random.default_rng(seed)
    combo = rng.integers(0, combinations, rows)
    model_idx = combo % len(MODELS)
    key_idx = combo // len(MODELS)  # ~750 keys, each pinned to a team and a user
    team_idx = key_idx % 40
    user_idx = key_idx % 300
    start_ms = int(HOUR.timestamp() * 1000)
    start = start_ms + rng.integers(0, 3_600_000, rows)
    prompt = rng.integers(0, 4_000, rows)
    completion = rng.integers(0, 1_000, rows)
    spend = np.round(prompt * 2.5e-6 + completion * 1e-5, 12) * rng.choice([1.0, 0.1, 3e-4], rows)
    failed = rng.random(rows) < 0.02
    spend[failed] = 0.0
    models = np.array(MODELS, dtype=object)[model_idx]
    providers = np.array(PROVIDERS, dtype=object)[model_idx]
    keys = np.char.add("sk-hash-", key_idx.astype(str)).astype(object)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(np.char.add("req-", np.arange(rows).astype(str)), pa.string()),
        "call_type": pa.repeat(pa.scalar("acompletion"), rows),
        "status": pa.array(np.where(failed, "failure", "success"), pa.string()),
        "start_time": pa.array(start, pa.timestamp("ms", tz="UTC")),
        "model": pa.array(models, pa.string()),
        "provider": pa.array(providers, pa.string()),
        "api_key": pa.array(keys, pa.string()),
        "key_alias": pa.array(np.char.add("key-", key_idx.astype(str)), pa.string()),
        "team_id": pa.array(np.char.add("team-", team_idx.astype(str)), pa.string()),
        "team_alias": pa.array(np.char.add("Team ", team_idx.astype(str)), pa.string()),
        "user_id": pa.array(np.char.add("user-", user_idx.astype(str)), pa.string()),
        "spend": pa.array(spend, pa.float64()),
        "prompt_tokens": pa.array(prompt, pa.int64()),
        "completion_tokens": pa.array(completion, pa.int64()),
        "total_tokens": pa.array(prompt + completion, pa.int64()),
        "cache_read_tokens": pa.array(np.zeros(rows, dtype=np.int64)),
        "cache_creation_tokens": pa.array(np.zeros(rows, dtype=np.int64)),
        "request_tags": pa.array([[]] * rows, pa.list_(pa.string())),
        "user_agent_tags": pa.array([[]] * rows, pa.list_(pa.string())),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(rows, f.type) for f in LAKE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=LAKE_SCHEMA)


def run(rows: int = 200_000, repeats: int = 5) -> dict[str, float | int]:
    """Best-of-``repeats`` seconds for build_line_items and render_bodies on one hour."""
    lake = synthetic_hour(rows)
    build_s: list[float] = []
    render_s: list[float] = []
    items = build_line_items(lake, DEFAULT_GRAIN)
    bodies = render_bodies(HOUR, items)
    for _ in range(repeats):
        t0 = time.perf_counter()
        items = build_line_items(lake, DEFAULT_GRAIN)
        t1 = time.perf_counter()
        bodies = render_bodies(HOUR, items)
        t2 = time.perf_counter()
        build_s.append(t1 - t0)
        render_s.append(t2 - t1)
    best = min(b + r for b, r in zip(build_s, render_s, strict=True))
    with localcontext() as ctx:
        ctx.prec = 200
        sent = sum(line_item_cost_by_hour(items).values(), Decimal(0))
    if sent != decimal_sum_of_spend(lake):
        raise AssertionError(f"cost not conserved: sent {sent}, lake {decimal_sum_of_spend(lake)}")
    return {
        "rows": rows,
        "line_items": items.num_rows,
        "bodies": len(bodies),
        "body_bytes": sum(len(b) for b in bodies),
        "build_s": round(min(build_s), 4),
        "render_s": round(min(render_s), 4),
        "total_s": round(best, 4),
    }


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
