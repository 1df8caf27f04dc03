"""Real LiteLLM 1.108.7 rows of every route, through PostgreSQL, the job and the fake CloudZero.

One hour of real rows: OpenAI chat, streaming, ``/v1/responses``, embeddings; Claude Sonnet 4.5
through ``/v1/chat/completions``, ``/v1/messages`` and the ``/anthropic`` pass-through (spelled
``anthropic/claude-sonnet-4-5-20250929`` on the first two, ``claude-sonnet-4-5-20250929`` on the
last, and ``claude-sonnet-4-5`` when the client sends the alias); an unpriced in-house model; a
master-key call. The six rows of the second capture are moved two hours back into the hour of
the first. What CloudZero ends up holding is read back from the fake over real HTTP.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pyarrow as pa

from cz_pipeline.defs.resources import CloudZeroResource
from cz_pipeline.lib.cbf import DEFAULT_GRAIN, TAG_PREFIX
from cz_pipeline.lib.hours import partition_key
from cz_pipeline.lib.litellm_tables import create_litellm_tables
from cz_pipeline.lib.models import canonical_model_name
from cz_pipeline.lib.money import money_sum
from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero
from cz_pipeline_tests.litellm_samples import insert_sample_rows, read_alias_rows, read_route_rows
from cz_pipeline_tests.pipeline_runs import failed_checks, run_job

API_KEY = "czk_TESTSECRET_routes_5e1f"
CONNECTION_ID = "8a1d2c3e-4b5f-4a6b-9c7d-0e1f2a3b4c5d"
HOUR = datetime(2026, 12, 2, 0, tzinfo=UTC)
SECOND_CAPTURE_LAG = timedelta(hours=2)  # its rows are from 02:31, the routes' from 00:52
TIMESTAMPS = ("startTime", "endTime", "completionStartTime")
# The in-house model is priced at 0 on purpose: unpriced traffic is not what this test is about.
UNPRICED_SHARE = 0.5


def moved(row: dict[str, Any], by: timedelta) -> dict[str, Any]:
    """``row`` with its request times (naive UTC text, as LiteLLM stores them) moved ``by``."""
    times = {
        name: (datetime.fromisoformat(row[name]) + by).isoformat(timespec="milliseconds")
        for name in TIMESTAMPS
        if row.get(name)
    }
    return {**row, **times}


def rows_of_the_hour() -> list[dict[str, Any]]:
    """The 60 route rows plus the 6 rows with the client's alias and the master key."""
    return [*read_route_rows(), *(moved(r, -SECOND_CAPTURE_LAG) for r in read_alias_rows())]


def exact_spend(spends: list[float]) -> Decimal:
    return money_sum(pa.array(spends, pa.float64()))


def upload(database_url: str, lake_dir: Path, fake: FakeCloudZero) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return run_job(
            instance,
            lake_dir,
            partition_key(HOUR),
            partition_key(HOUR),
            database_url=database_url,
            cloudzero=CloudZeroResource(
                api_url=fake.url, api_key=API_KEY, connection_id=CONNECTION_ID, backoff_base=0.001
            ),
            unpriced_share_threshold=UNPRICED_SHARE,
        )


def test_one_model_on_every_route_reaches_cloudzero_under_one_name(
    fresh_database: str, tmp_path: Path
) -> None:
    rows = rows_of_the_hour()
    with psycopg2.connect(fresh_database) as connection, connection.cursor() as cursor:
        create_litellm_tables(cursor)
        insert_sample_rows(cursor, rows)
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake:
        result = upload(fresh_database, tmp_path, fake)
        stored = fake.stored_rows("2026-12")
        hour_costs = fake.hour_costs("2026-12")

    assert not failed_checks(result) - {"unpriced_traffic"}
    # Exact per hour: every cent of the 66 rows, once.
    assert hour_costs == {"2026-12-02T00:00:00Z": exact_spend([r["spend"] for r in rows])}

    # One usage family per model, whatever the route.
    assert {r["resource/usage_family"] for r in stored} == {
        "gpt-4o",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "text-embedding-3-small",
        "in-house-llm-v2",
    }
    # One CZRN per grain combination: the grain's tags identify a line item and vice versa.
    grain_tags = [TAG_PREFIX + key for key, _ in DEFAULT_GRAIN.tag_columns()]
    ids_by_combination: dict[tuple[str | None, ...], set[str]] = defaultdict(set)
    for row in stored:
        ids_by_combination[tuple(row.get(t) for t in grain_tags)].add(row["resource/id"])
    assert all(len(ids) == 1 for ids in ids_by_combination.values())
    assert len(ids_by_combination) == len(stored)

    # Claude Sonnet 4.5 of each key: chat, /v1/messages and the pass-through in one line item,
    # whichever way the pass-through's client spelled the model.
    sonnet_rows = [
        r for r in rows if canonical_model_name(r["model"], "anthropic") == "claude-sonnet-4-5"
    ]
    routes_by_key: dict[str, set[str]] = defaultdict(set)
    spend_by_key: dict[str, list[float]] = defaultdict(list)
    for source_row in sonnet_rows:
        routes_by_key[source_row["api_key"][:12]].add(source_row["call_type"])
        spend_by_key[source_row["api_key"][:12]].append(source_row["spend"])
    assert set(map(frozenset, routes_by_key.values())) == {
        frozenset({"acompletion", "anthropic_messages", "pass_through_endpoint"})
    }
    sonnet_items = {
        r[TAG_PREFIX + "api_key_prefix"]: r
        for r in stored
        if r["resource/usage_family"] == "claude-sonnet-4-5"
    }
    assert {r["model"] for r in sonnet_rows} == {
        "anthropic/claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5",
    }
    assert set(sonnet_items) == set(spend_by_key)
    for prefix, item in sonnet_items.items():
        assert Decimal(item["cost/cost"]) == exact_spend(spend_by_key[prefix])
        assert item[TAG_PREFIX + "model"] == "claude-sonnet-4-5"
        assert ":llm-usage:claude-sonnet-4-5-" in item["resource/id"]

    # The master-key call is attributed to the master key, never to a fake hash prefix.
    master = [r for r in stored if r[TAG_PREFIX + "api_key_prefix"] == "master-key"]
    assert len(master) == 1
    assert master[0]["resource/account"] == master[0][TAG_PREFIX + "key_alias"] == "master-key"
    assert ":cross-region:master-key:llm-usage:gpt-4o-" in master[0]["resource/id"]
    assert not [r for r in stored if "litellm_prox" in str(r)]
