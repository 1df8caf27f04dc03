import math
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from cz_pipeline.lib.normalize import AliasLookup, ExtractSchemaError, canonical_json, normalize
from cz_pipeline.lib.sources.litellm_api import rows_to_extract
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA
from cz_pipeline_tests.extract_rows import extract_row, extract_table
from cz_pipeline_tests.litellm_samples import read_route_rows

T0 = datetime(2026, 11, 1, 3, 0)


def test_output_has_the_lake_schema_and_keeps_every_row() -> None:
    table = extract_table([extract_row(f"r{i}", T0) for i in range(5)])
    lake = normalize(table)
    assert lake.schema == LAKE_SCHEMA
    assert lake.column("request_id").to_pylist() == [f"r{i}" for i in range(5)]


def test_empty_strings_become_nulls_and_columns_are_renamed() -> None:
    row = extract_row("a", T0, team_id="", user="", end_user="", model_group="", key_alias="")
    lake = normalize(extract_table([row])).to_pylist()[0]
    for name in ("team_id", "user_id", "end_user", "model_group", "key_alias"):
        assert lake[name] is None, name
    assert lake["provider"] == "openai"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, "success"), ("", "success"), ("success", "success"), ("failure", "failure")],
)
def test_null_status_means_success(status: str | None, expected: str) -> None:
    lake = normalize(extract_table([extract_row("a", T0, status=status)]))
    assert lake.column("status").to_pylist() == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("True", True), ("False", False), ("None", None), ("", None), (None, None)],
)
def test_cache_hit_strings_are_parsed(text: str | None, expected: bool | None) -> None:
    lake = normalize(extract_table([extract_row("a", T0, cache_hit=text)]))
    assert lake.column("cache_hit").to_pylist() == [expected]


def test_user_agent_tags_are_split_from_caller_tags() -> None:
    rows = [
        extract_row("a", T0, request_tags='["feature:rag", "User-Agent: curl", "env:prod"]'),
        extract_row("b", T0, request_tags='["User-Agent: curl", "User-Agent: curl/7.88.1"]'),
        extract_row("c", T0, request_tags=None),
        extract_row("d", T0, request_tags='["feature:rag", "User-Agent: curl", "env:prod"]'),
    ]
    lake = normalize(extract_table(rows))
    assert lake.column("request_tags").to_pylist() == [
        ["feature:rag", "env:prod"],
        [],
        [],
        ["feature:rag", "env:prod"],
    ]
    assert lake.column("user_agent_tags").to_pylist() == [
        ["User-Agent: curl"],
        ["User-Agent: curl", "User-Agent: curl/7.88.1"],
        [],
        ["User-Agent: curl"],
    ]


def test_timestamps_are_utc_and_keep_milliseconds() -> None:
    moment = datetime(2026, 11, 1, 3, 59, 59, 999000)
    lake = normalize(extract_table([extract_row("a", moment)]))
    assert lake.column("start_time").to_pylist() == [moment.replace(tzinfo=UTC)]


def test_missing_token_counts_become_zero_but_spend_is_untouched() -> None:
    row = extract_row("a", T0, cache_read_tokens=None, cache_creation_tokens=None, spend=2.5e-08)
    lake = normalize(extract_table([row])).to_pylist()[0]
    assert (lake["cache_read_tokens"], lake["cache_creation_tokens"]) == (0, 0)
    assert lake["spend"] == 2.5e-08


def test_aliases_fill_only_what_metadata_lacks() -> None:
    rows = [
        extract_row("a", T0, api_key="k1", key_alias=None, team_id="t1", team_alias=None),
        extract_row("b", T0, api_key="k1", key_alias="as-of-request", team_id="t1", team_alias="x"),
        extract_row("c", T0, api_key="unknown", key_alias=None, team_id="", team_alias=None),
    ]
    aliases = AliasLookup(key_aliases={"k1": "renamed-key"}, team_aliases={"t1": "team-one"})
    lake = normalize(extract_table(rows), aliases)
    assert lake.column("key_alias").to_pylist() == ["renamed-key", "as-of-request", None]
    assert lake.column("team_alias").to_pylist() == ["team-one", "x", None]


def test_wrong_columns_are_named() -> None:
    table = extract_table([extract_row("a", T0)]).drop_columns(["spend"])
    table = table.append_column("messages", pa.array(["secret"]))
    with pytest.raises(ExtractSchemaError, match=r"missing \['spend'\], unexpected \['messages'\]"):
        normalize(table)


# ---------------------------------------------------------------------------------------------
# Cost parts and JSON text, on real rows of every route


def route_lake() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = normalize(rows_to_extract(read_route_rows())).to_pylist()
    return rows


COST_PARTS = ("uncached_input_cost", "cache_read_cost", "cache_creation_cost", "output_cost")


def test_cost_parts_of_real_rows_add_up_to_spend_without_double_counting() -> None:
    rows = route_lake()
    itemized = [r for r in rows if all(r[part] is not None for part in COST_PARTS)]
    assert len(itemized) == 54  # all but the six /anthropic pass-through calls without cache
    for row in itemized:
        parts = sum(row[part] for part in COST_PARTS)
        assert math.isclose(parts, row["spend"], rel_tol=1e-12, abs_tol=1e-18), row["request_id"]
    cached = next(
        r for r in itemized if r["call_type"] == "anthropic_messages" and r["cache_read_tokens"]
    )
    assert (cached["cache_read_tokens"], cached["cache_creation_tokens"]) == (2048, 512)
    assert cached["uncached_input_cost"] == pytest.approx(18 * 3e-06)  # 2578 - 2048 - 512 tokens
    assert (cached["cache_read_cost"], cached["cache_creation_cost"]) == (0.0006144, 0.00192)


def test_cost_parts_without_a_breakdown_are_zero_only_where_certain() -> None:
    rows = route_lake()
    bare = [r for r in rows if r["uncached_input_cost"] is None]
    assert {r["call_type"] for r in bare} == {"pass_through_endpoint"}
    for row in bare:
        assert row["spend"] > 0
        assert row["completion_tokens"] > 0
        assert row["output_cost"] is None  # the split of spend needs prices the row lacks
        assert (row["cache_read_cost"], row["cache_creation_cost"]) == (0.0, 0.0)  # no cache tokens
    unpriced = [r for r in rows if r["model"] == "openai/in-house-llm-v2"]
    assert unpriced
    assert all(r[part] == 0.0 for r in unpriced for part in COST_PARTS)
    embeddings = [r for r in rows if r["call_type"] == "aembedding"]
    assert embeddings
    assert all(r["output_cost"] == 0.0 for r in embeddings)


def test_json_text_is_one_spelling_whatever_the_source_printed() -> None:
    texts = ['{"zeta": "z", "a_long_key": 1}', '{"a_long_key":1,"zeta":"z"}', "null", "{oops", None]
    rows = [extract_row(f"r{i}", T0, spend_logs_metadata=t) for i, t in enumerate(texts)]
    lake = normalize(extract_table(rows))
    assert lake.column("spend_logs_metadata").to_pylist() == [
        '{"a_long_key":1,"zeta":"z"}',
        '{"a_long_key":1,"zeta":"z"}',
        None,  # JSON null is no metadata
        "{oops",  # not JSON: kept as it is, nothing lost
        None,
    ]
    assert canonical_json({"ü": [1.5, None]}) == '{"ü":[1.5,null]}'
