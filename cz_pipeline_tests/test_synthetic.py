"""Synthetic LiteLLM traffic: realistic, deterministic per hour, and the same in Arrow and in
LiteLLM's own PostgreSQL tables (real server, real DDL)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cz_pipeline.lib.hours import HOUR, HourWindow
from cz_pipeline.lib.litellm_tables import (
    DAILY_USER_SPEND,
    DELETED_VERIFICATION_TOKEN,
    SPEND_LOGS,
    TEAM_TABLE,
    VERIFICATION_TOKEN,
    create_litellm_tables,
    existing_columns,
)
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA, OPTIONAL_SOURCE_COLUMNS
from cz_pipeline.lib.synthetic import (
    MASTER_KEY_API_KEY,
    MASTER_KEY_USER,
    UNPRICED_MODELS,
    generate_extract,
    generate_lookup_tables,
    hour_factor,
    hourly_row_count,
    jsonb_text,
    write_to_postgres,
)
from cz_pipeline_tests.litellm_samples import insert_sample_rows, read_sample_rows

AFTERNOON = datetime(2026, 11, 27, 15, tzinfo=UTC)
ONE_HOUR = HourWindow.for_hour(AFTERNOON)
THREE_HOURS = HourWindow(AFTERNOON - HOUR, AFTERNOON + 2 * HOUR)
DAY = HourWindow(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC))
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def day() -> pa.Table:
    return generate_extract(DAY, 400, seed=7)


def column(table: pa.Table, name: str) -> list[Any]:
    values: list[Any] = table.column(name).to_pylist()
    return values


def rows_where(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.filter(mask).to_pylist()
    return rows


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params or None)
        return list(cursor.fetchall())


# ------------------------------------------------------------------------------------------------
# The Arrow extract
# ------------------------------------------------------------------------------------------------


def test_extract_has_exactly_the_extract_schema() -> None:
    table = generate_extract(ONE_HOUR, 300)
    assert table.schema.equals(EXTRACT_SCHEMA, check_metadata=True)
    assert table.num_rows == hourly_row_count(AFTERNOON, 300) == 480
    empty = generate_extract(ONE_HOUR, 0)
    assert empty.num_rows == 0
    assert empty.schema.equals(EXTRACT_SCHEMA, check_metadata=True)


def test_same_inputs_give_the_same_rows_and_the_seed_matters() -> None:
    first = generate_extract(ONE_HOUR, 200, seed=3)
    assert first.equals(generate_extract(ONE_HOUR, 200, seed=3))
    other = generate_extract(ONE_HOUR, 200, seed=4)
    assert set(column(first, "request_id")).isdisjoint(column(other, "request_id"))
    virtual_keys = set(column(first, "api_key")) - {MASTER_KEY_API_KEY}
    assert virtual_keys
    assert virtual_keys.isdisjoint(column(other, "api_key"))


def test_an_hour_is_identical_alone_and_inside_a_larger_window() -> None:
    window = generate_extract(THREE_HOURS, 150, seed=11)
    starts = window.column("start_time")
    middle = window.filter(
        pc.and_(
            pc.greater_equal(starts, pa.scalar(AFTERNOON.replace(tzinfo=None), pa.timestamp("ms"))),
            pc.less(starts, pa.scalar((AFTERNOON + HOUR).replace(tzinfo=None), pa.timestamp("ms"))),
        )
    )
    alone = generate_extract(ONE_HOUR, 150, seed=11)
    assert alone.num_rows > 0
    assert middle.equals(alone)
    hours = [generate_extract(HourWindow.for_hour(h), 150, seed=11) for h in THREE_HOURS.hours()]
    assert window.equals(pa.concat_tables(hours))


def test_rows_are_inside_the_window_sorted_and_unique(day: pa.Table) -> None:
    starts = column(day, "start_time")
    assert min(starts) >= DAY.start.replace(tzinfo=None)
    assert max(starts) < DAY.end.replace(tzinfo=None)
    keys = list(zip(starts, column(day, "request_id"), strict=True))
    assert keys == sorted(keys)
    assert len(set(column(day, "request_id"))) == day.num_rows
    assert len(set(column(day, "litellm_call_id"))) == day.num_rows
    assert day.num_rows == sum(hourly_row_count(h, 400) for h in DAY.hours())
    for row in day.to_pylist():
        assert row["start_time"] <= row["end_time"] < row["created_at"]
        duration = (row["end_time"] - row["start_time"]).total_seconds() * 1000
        assert row["request_duration_ms"] == round(duration)


def test_daily_rhythm_stays_within_its_factors_and_averages_to_the_mean() -> None:
    factors = [hour_factor(h) for h in DAY.hours()]
    assert min(factors) == pytest.approx(0.4)
    assert factors[3] == pytest.approx(0.4)
    assert max(factors) == pytest.approx(1.6)
    assert factors[15] == pytest.approx(1.6)
    assert sum(factors) / 24 == pytest.approx(1.0, abs=1e-12)
    for hour in DAY.hours():
        assert 0.4 * 1000 <= hourly_row_count(hour, 1000) <= 1.6 * 1000
    assert sum(hourly_row_count(h, 1000) for h in DAY.hours()) == pytest.approx(24_000, abs=12)
    with pytest.raises(ValueError, match="must not be negative"):
        hourly_row_count(AFTERNOON, -1)


def test_failures_cost_nothing_and_costs_add_up_to_spend(day: pa.Table) -> None:
    statuses = column(day, "status")
    assert set(statuses) == {"success", "failure"}
    assert 0.01 < statuses.count("failure") / len(statuses) < 0.06
    for row in rows_where(day, pc.equal(day.column("status"), "failure")):
        assert row["spend"] == 0.0
        assert row["input_cost"] is None
        assert row["output_cost"] is None
        assert row["completion_tokens"] == 0
        assert row["cache_hit"] == "False"
    priced = rows_where(day, pc.is_valid(day.column("input_cost")))
    assert len(priced) > 0.8 * day.num_rows
    for row in priced:
        assert row["input_cost"] + row["output_cost"] == row["spend"] > 0
        if row["cache_read_cost"] is not None:
            assert row["cache_read_cost"] + row["cache_creation_cost"] <= row["input_cost"]
    spends = [s for s in column(day, "spend") if s > 0]
    assert min(spends) < 1e-7, "tiny embedding costs like 2.5e-08 must be present"


def test_unpriced_models_and_cache_hits_have_tokens_but_no_spend(day: pa.Table) -> None:
    unpriced = rows_where(
        day,
        pc.and_(
            pc.is_in(day.column("model"), value_set=pa.array(sorted(UNPRICED_MODELS))),
            pc.equal(day.column("status"), "success"),
        ),
    )
    assert 0 < len(unpriced) < 0.05 * day.num_rows
    assert all(r["spend"] == 0 and r["total_tokens"] > 0 for r in unpriced)
    hits = rows_where(day, pc.equal(day.column("cache_hit"), "True"))
    assert hits, "some requests are answered from LiteLLM's cache"
    assert all(r["spend"] == 0 and "_cache_hit" in r["request_id"] for r in hits)
    assert set(column(day, "cache_hit")) == {"None", "False", "True"}


def test_embeddings_log_prompt_tokens_with_total_zero(day: pa.Table) -> None:
    embeddings = rows_where(
        day,
        pc.and_(
            pc.equal(day.column("call_type"), "aembedding"),
            pc.equal(day.column("status"), "success"),
        ),
    )
    assert len(embeddings) > 0.05 * day.num_rows
    assert all(r["total_tokens"] == 0 and r["prompt_tokens"] > 0 for r in embeddings)
    assert all(
        r["completion_tokens"] == 0 and r["request_id"] == r["litellm_call_id"] for r in embeddings
    )
    assert all(UUID.match(r["request_id"]) for r in embeddings)


def test_models_ids_and_anthropic_cache_tokens_look_real(day: pa.Table) -> None:
    models = set(column(day, "model"))
    assert {
        "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0",
        "ft:gpt-4o:org::abc",
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4-5",
        "vertex_ai/gemini-2.5-pro",
    } <= models
    assert set(column(day, "custom_llm_provider")) == {
        "openai",
        "anthropic",
        "bedrock",
        "vertex_ai",
        "azure",
        "",
    }
    ids = column(day, "request_id")
    for prefix in ("chatcmpl-", "msg_01", "resp_"):
        assert any(i.startswith(prefix) for i in ids), prefix
    cached = rows_where(day, pc.greater(day.column("cache_read_tokens"), 0))
    assert cached
    assert {r["custom_llm_provider"] for r in cached} == {"anthropic"}
    for row in cached:
        assert row["prompt_tokens"] >= row["cache_read_tokens"] + row["cache_creation_tokens"]
        assert row["cache_read_cost"] is not None or row["spend"] == 0
    unknown = rows_where(day, pc.equal(day.column("model"), "unknown-model"))
    assert all(
        r["status"] == "failure" and r["model_group"] == "" and r["model_id"] == "" for r in unknown
    )


def test_identities_tags_and_metadata_look_real(day: pa.Table) -> None:
    master = rows_where(day, pc.equal(day.column("api_key"), MASTER_KEY_API_KEY))
    assert master
    assert all(
        r["user"] == MASTER_KEY_USER and r["key_alias"] is None and r["team_id"] == ""
        for r in master
    )
    assert all(
        k == MASTER_KEY_API_KEY or re.fullmatch(r"[0-9a-f]{64}", k) for k in column(day, "api_key")
    )
    for name in ("team_id", "user", "end_user", "organization_id"):
        values = column(day, name)
        assert "" in values, name
        assert any(values), name
    assert column(day, "end_user").count("") > 0.7 * day.num_rows
    for tags_text in column(day, "request_tags"):
        tags = json.loads(tags_text)
        assert tags_text == jsonb_text(tags)
        short = tags[-2].removeprefix("User-Agent: ")
        assert tags[-2] != short, tags
        assert tags[-1].startswith(f"User-Agent: {short}/"), tags
    metadata = [m for m in column(day, "spend_logs_metadata") if m is not None]
    assert 0 < len(metadata) < day.num_rows
    assert '{"job": "nightly", "run": 3}' in metadata
    assert all(jsonb_text(json.loads(m)) == m for m in metadata)


def test_lookup_tables_cover_the_traffic_and_fill_missing_aliases(day: pa.Table) -> None:
    lookup = generate_lookup_tables(7)
    assert len(lookup.keys) >= 18
    assert len(lookup.teams) == 6
    assert len(lookup.deleted_keys) == 2
    by_token = {k.token: k for k in lookup.keys}
    used = set(column(day, "api_key")) - {MASTER_KEY_API_KEY}
    assert used <= set(by_token)
    assert {k.token for k in lookup.deleted_keys} <= used, "deleted keys still appear in logs"
    assert all(k.key_name.startswith("sk-...") and len(k.key_name) == 10 for k in lookup.keys)
    team_alias = {t.team_id: t.team_alias for t in lookup.teams}
    aliasless = 0
    for row in rows_where(day, pc.not_equal(day.column("api_key"), MASTER_KEY_API_KEY)):
        key = by_token[row["api_key"]]
        assert row["team_id"] == (key.team_id or "")
        assert row["user"] == (key.user_id or "")
        if row["key_alias"] is None:
            aliasless += 1
            assert row["team_alias"] is None
        else:
            assert row["key_alias"] == key.key_alias
            assert row["team_alias"] == team_alias.get(row["team_id"])
    assert 0 < aliasless < 0.05 * day.num_rows


# ------------------------------------------------------------------------------------------------
# LiteLLM's PostgreSQL tables
# ------------------------------------------------------------------------------------------------

# The extract, read back from "LiteLLM_SpendLogs" with plain SQL over LiteLLM's stored shape.
READ_BACK = f"""
SELECT request_id, litellm_call_id, call_type, status, "startTime", "endTime", created_at,
       request_duration_ms::bigint, model, model_id, model_group, custom_llm_provider, api_key,
       metadata->>'user_api_key_alias', team_id, metadata->>'user_api_key_team_alias',
       organization_id, "user", end_user, session_id, spend, prompt_tokens::bigint,
       completion_tokens::bigint, total_tokens::bigint,
       COALESCE((metadata->'usage_object'->>'cache_read_input_tokens')::bigint, 0),
       COALESCE((metadata->'usage_object'->>'cache_creation_input_tokens')::bigint, 0),
       (metadata->'cost_breakdown'->>'input_cost')::float8,
       (metadata->'cost_breakdown'->>'output_cost')::float8,
       (metadata->'cost_breakdown'->>'cache_read_cost')::float8,
       (metadata->'cost_breakdown'->>'cache_creation_cost')::float8,
       cache_hit, request_tags::text,
       CASE WHEN jsonb_typeof(metadata->'spend_logs_metadata') = 'object'
            THEN (metadata->'spend_logs_metadata')::text END,
       NULL::text
FROM "{SPEND_LOGS}" ORDER BY "startTime", request_id COLLATE "C"
"""


def read_back(url: str) -> pa.Table:
    rows = query(url, READ_BACK)
    return pa.Table.from_pylist(
        [dict(zip(EXTRACT_SCHEMA.names, row, strict=True)) for row in rows], schema=EXTRACT_SCHEMA
    )


@pytest.fixture
def two_hours_written(fresh_database: str) -> tuple[str, HourWindow]:
    window = HourWindow(
        datetime(2026, 11, 27, 23, tzinfo=UTC), datetime(2026, 11, 28, 1, tzinfo=UTC)
    )
    summary = write_to_postgres(fresh_database, window, 250, seed=5)
    expected = generate_extract(window, 250, seed=5)
    assert summary.rows_written == expected.num_rows > 0
    assert summary.rows_skipped == 0
    assert summary.total_spend == math.fsum(column(expected, "spend"))
    return fresh_database, window


def test_postgres_rows_read_back_as_exactly_the_extract(
    two_hours_written: tuple[str, HourWindow],
) -> None:
    url, window = two_hours_written
    expected = generate_extract(window, 250, seed=5)
    actual = read_back(url)
    # Spend must survive COPY and jsonb bit for bit, not just "close enough".
    written = dict(zip(column(actual, "request_id"), column(actual, "spend"), strict=True))
    assert all(
        written[r].hex() == s.hex()
        for r, s in zip(column(expected, "request_id"), column(expected, "spend"), strict=True)
    )
    for name in EXTRACT_SCHEMA.names:
        assert actual.column(name).equals(expected.column(name)), name
    stored = query(
        url,
        f"SELECT count(*) FILTER (WHERE messages = '{{}}' AND response = '{{}}' "
        "AND proxy_server_request = '{}'), count(*) FILTER (WHERE requester_ip_address IS NULL), "
        "count(*) FILTER (WHERE metadata ? 'model_map_information'), "
        "count(*) FILTER (WHERE status = 'failure' AND metadata->'error_information' IS NULL) "
        f'FROM "{SPEND_LOGS}"',
    )
    assert stored == [(expected.num_rows, 0, expected.num_rows, 0)]


def test_lookup_tables_resolve_every_key_missing_its_alias(
    two_hours_written: tuple[str, HourWindow],
) -> None:
    url, _ = two_hours_written
    lookup = generate_lookup_tables(5)
    live = query(
        url, f'SELECT token, key_alias, team_id FROM "{VERIFICATION_TOKEN}" ORDER BY token'
    )
    assert live == sorted((k.token, k.key_alias, k.team_id) for k in lookup.live_keys)
    deleted = query(
        url, f'SELECT token, key_alias FROM "{DELETED_VERIFICATION_TOKEN}" ORDER BY token'
    )
    assert deleted == sorted((k.token, k.key_alias) for k in lookup.deleted_keys)
    teams = query(url, f'SELECT team_id, team_alias FROM "{TEAM_TABLE}" ORDER BY team_id')
    assert teams == sorted((t.team_id, t.team_alias) for t in lookup.teams)
    [(aliasless, unresolved)] = query(
        url,
        f"""SELECT count(*),
                   count(*) FILTER (WHERE NOT EXISTS (
                       SELECT 1 FROM "{VERIFICATION_TOKEN}" v
                       WHERE v.token = s.api_key AND v.key_alias IS NOT NULL
                       UNION ALL SELECT 1 FROM "{DELETED_VERIFICATION_TOKEN}" d
                       WHERE d.token = s.api_key AND d.key_alias IS NOT NULL))
            FROM "{SPEND_LOGS}" s
            WHERE s.metadata->>'user_api_key_alias' IS NULL AND s.api_key <> %s""",
        MASTER_KEY_API_KEY,
    )
    assert aliasless > 0
    assert unresolved == 0
    [(key_spend, logged)] = query(
        url,
        f'SELECT (SELECT sum(spend) FROM "{VERIFICATION_TOKEN}"), sum(s.spend) '
        f'FROM "{SPEND_LOGS}" s '
        f'WHERE s.api_key IN (SELECT token FROM "{VERIFICATION_TOKEN}")',
    )
    assert key_spend == pytest.approx(logged, rel=1e-12)


DAILY_FROM_LOGS = f"""
SELECT to_char("startTime", 'YYYY-MM-DD'), "user", api_key, model, custom_llm_provider,
       CASE call_type WHEN 'aembedding' THEN '/embeddings' WHEN 'aresponses' THEN '/responses'
            ELSE '/chat/completions' END,
       count(*), count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'failure'),
       sum(prompt_tokens), sum(completion_tokens),
       sum(COALESCE((metadata->'usage_object'->>'cache_read_input_tokens')::bigint, 0)),
       sum(COALESCE((metadata->'usage_object'->>'cache_creation_input_tokens')::bigint, 0)),
       sum(spend)
FROM "{SPEND_LOGS}" GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
"""
DAILY_TABLE = f"""
SELECT date, user_id, api_key, model, custom_llm_provider, endpoint, api_requests,
       successful_requests, failed_requests, prompt_tokens, completion_tokens,
       cache_read_input_tokens, cache_creation_input_tokens, spend
FROM "{DAILY_USER_SPEND}" ORDER BY 1, 2, 3, 4, 5, 6
"""


def assert_daily_matches_logs(url: str) -> None:
    from_logs, table = query(url, DAILY_FROM_LOGS), query(url, DAILY_TABLE)
    assert [r[:-1] for r in table] == [r[:-1] for r in from_logs]
    assert [r[-1] for r in table] == pytest.approx([r[-1] for r in from_logs], rel=1e-12)


def test_daily_user_spend_counts_every_row_once_across_reruns(
    two_hours_written: tuple[str, HourWindow],
) -> None:
    url, window = two_hours_written
    assert_daily_matches_logs(url)
    assert {r[0] for r in query(url, DAILY_TABLE)} == {"2026-11-27", "2026-11-28"}
    again = write_to_postgres(url, window, 250, seed=5)
    assert (again.rows_written, again.total_spend) == (0, 0.0)
    assert again.rows_skipped == generate_extract(window, 250, seed=5).num_rows
    later = HourWindow(window.start + HOUR, window.end + HOUR)
    overlap = write_to_postgres(url, later, 250, seed=5)
    new_hour = window.end
    assert overlap.rows_written == hourly_row_count(new_hour, 250)
    assert overlap.rows_skipped == hourly_row_count(window.end - HOUR, 250)
    assert_daily_matches_logs(url)
    [(requests,)] = query(url, f'SELECT sum(api_requests) FROM "{DAILY_USER_SPEND}"')
    [(rows,)] = query(url, f'SELECT count(*) FROM "{SPEND_LOGS}"')
    assert requests == rows


def test_legacy_table_lacks_the_newer_columns_and_padding_grows_metadata(
    fresh_database: str,
) -> None:
    summary = write_to_postgres(
        fresh_database, ONE_HOUR, 40, seed=2, legacy=True, metadata_padding_bytes=9000
    )
    expected = generate_extract(ONE_HOUR, 40, seed=2)
    assert summary.rows_written == expected.num_rows == 64
    with psycopg2.connect(fresh_database) as connection, connection.cursor() as cursor:
        columns = existing_columns(cursor, SPEND_LOGS)
    assert set(OPTIONAL_SOURCE_COLUMNS).isdisjoint(columns)
    assert {"request_id", "startTime", "spend", "metadata", "updated_at"} <= set(columns)
    spends = dict(query(fresh_database, f'SELECT request_id, spend FROM "{SPEND_LOGS}"'))
    assert spends == dict(
        zip(column(expected, "request_id"), column(expected, "spend"), strict=True)
    )
    [(shortest, longest)] = query(
        fresh_database,
        "SELECT min(octet_length(metadata::text)), max(octet_length(metadata::text)) "
        f'FROM "{SPEND_LOGS}"',
    )
    assert shortest > 9000
    assert longest < 9000 + 8000


def test_litellm_ddl_and_real_sample_rows(fresh_database: str) -> None:
    with psycopg2.connect(fresh_database) as connection, connection.cursor() as cursor:
        create_litellm_tables(cursor)
        create_litellm_tables(cursor)  # idempotent
        assert insert_sample_rows(cursor, read_sample_rows()) == 22
    types = dict(
        (name, (data_type, precision, nullable, default))
        for name, data_type, precision, nullable, default in query(
            fresh_database,
            "SELECT column_name, data_type, datetime_precision, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_name = %s",
            SPEND_LOGS,
        )
    )
    assert types["startTime"] == ("timestamp without time zone", 3, "NO", None)
    assert types["spend"][:1] == ("double precision",)
    assert types["spend"][2] == "NO"
    assert types["prompt_tokens"][0] == "integer"
    assert types["api_key"] == ("text", None, "NO", "''::text")
    assert types["request_tags"] == ("jsonb", None, "YES", "'[]'::jsonb")
    assert types["team_id"] == ("text", None, "YES", None)
    assert set(OPTIONAL_SOURCE_COLUMNS) <= set(types)
    indexes = {name for (name,) in query(fresh_database, "SELECT indexname FROM pg_indexes")}
    assert {
        "LiteLLM_SpendLogs_pkey",
        "LiteLLM_SpendLogs_startTime_idx",
        "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_ll_key",
        "LiteLLM_VerificationToken_pkey",
        "LiteLLM_TeamTable_pkey",
    } <= indexes
    [row] = query(
        fresh_database,
        f"""SELECT spend, "startTime", total_tokens, prompt_tokens,
                   (metadata->'usage_object'->>'cache_read_input_tokens')::int,
                   request_tags->>0, cache_hit, status, team_id, "user"
            FROM "{SPEND_LOGS}" WHERE request_id = 'msg_mock_cached'""",
    )
    assert row == (
        0.0022125,
        datetime(2026, 11, 27, 16, 15, 40, 938000),
        1280,
        1200,
        1000,
        "feature:rag",
        "None",
        "success",
        "team-data",
        "",
    )
    [(count, embeddings_total)] = query(
        fresh_database,
        "SELECT count(*), sum(total_tokens) FILTER (WHERE call_type = 'aembedding') "
        f'FROM "{SPEND_LOGS}"',
    )
    assert (count, embeddings_total) == (22, 0)
