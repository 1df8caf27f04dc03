"""Lake -> CBF line items: exact cost, hours, CZRNs, tag policy, grain parsing, lineage."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cz_pipeline.lib import cbf
from cz_pipeline.lib.cbf import (
    API_KEY_PREFIX_CHARS,
    BASE_COLUMNS,
    DEFAULT_GRAIN,
    LINE_ITEM_LINEAGE,
    MAPPING_DOC,
    MASTER_KEY,
    NUMBER_PATTERN,
    TAG_KEY_PATTERN,
    TAG_PREFIX,
    Grain,
    build_line_items,
    decimal_sum_by_hour,
    decimal_sum_of_spend,
    is_valid_czrn,
    line_item_cost_by_hour,
    line_item_lineage,
    line_item_schema,
    mapping_doc,
)
from cz_pipeline.lib.cbf_checks import merge_known_tags, tags_constant_per_resource
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

HOUR = datetime(2025, 1, 31, 23, tzinfo=UTC)
AWKWARD_MODELS = [
    "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0",
    "ft:gpt-4o:org::abc",
    "gpt-4o",
    "GPT-4o",
    "gpt-4o:x",
    "gpt-4o/x",
    "",
    "None",
    "модель/ü:ß",
    "::::",
    "a" * 300,
]

_DEFAULTS: dict[str, Any] = {
    "request_id": "req",
    "call_type": "acompletion",
    "status": "success",
    "start_time": HOUR + timedelta(minutes=5),
    "model": "gpt-4o",
    "provider": "openai",
    "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
    "key_alias": "prod-key",
    "team_id": "team-1",
    "team_alias": "Team One",
    "user_id": "user-1",
    "spend": 0.0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
    "cache_read_tokens": 0,
    "cache_creation_tokens": 0,
    "request_tags": [],
    "user_agent_tags": [],
}


def lake_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """A lake table in ``LAKE_SCHEMA``; unspecified columns take realistic defaults."""
    columns: dict[str, list[Any]] = {f.name: [] for f in LAKE_SCHEMA}
    for index, row in enumerate(rows):
        full = {**_DEFAULTS, "request_id": f"req-{index}", **row}
        for name, values in columns.items():
            values.append(full.get(name))
    return pa.table(columns, schema=LAKE_SCHEMA)


def exact_sum(values: Sequence[Any]) -> Decimal:
    """What the cents should add up to: each float by its shortest repr, summed exactly."""
    with localcontext() as ctx:
        ctx.prec = 200
        return sum((Decimal(repr(v)) for v in values), Decimal(0))


def cost_total(items: pa.Table) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        return sum((Decimal(v) for v in items["cost/cost"].to_pylist()), Decimal(0))


AWKWARD_SPENDS = [
    0.1,
    0.2,
    0.3,
    0.1 + 0.2,
    2.5e-08,
    1e-12,
    5e-20,
    3.0000000000000004e-05,
    1.2345678901234567e-07,
    123456789.123456,
    1e15,
    9007199254740993.0,
    0.0,
    7.000000000000001e-06,
]


# ---------------------------------------------------------------------------------------------
# Grain


def test_grain_parse_round_trips_and_is_order_insensitive() -> None:
    grain = Grain.parse("provider,model,team,api_key,user,tag:feature,meta:job")
    assert grain.dimensions == ("provider", "model", "team", "api_key", "user")
    assert grain.request_tags == ("feature",)
    assert grain.metadata_keys == ("job",)
    assert Grain.parse(grain.to_spec()) == grain
    assert Grain.parse("user, team ,model,provider,api_key") == DEFAULT_GRAIN
    assert DEFAULT_GRAIN.to_spec() == "provider,model,team,api_key,user"


@pytest.mark.parametrize(
    "spec",
    [
        "provider,modle",
        "provider,provider",
        "provider,,model",
        "tag:",
        "tag:a,tag:a",
        "tag:a b,tag:a_b",  # both sanitise to tag.a_b
        "meta:x,meta:x",
    ],
)
def test_grain_parse_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="grain"):
        Grain.parse(spec)


def test_tag_keys_are_sanitised_to_cloudzero_characters() -> None:
    grain = Grain.parse("model,tag:my feature!,meta:job id/ü")
    keys = [c.removeprefix(TAG_PREFIX) for c in grain.columns() if c.startswith(TAG_PREFIX)]
    assert keys == ["model", "tag.my_feature_", "meta.job_id/_"]
    assert all(TAG_KEY_PATTERN.match(k) for k in keys)


# ---------------------------------------------------------------------------------------------
# Cost


def test_cost_is_conserved_exactly_over_awkward_floats() -> None:
    rows = [
        {"spend": s, "user_id": f"user-{i % 3}", "start_time": HOUR + timedelta(seconds=i)}
        for i, s in enumerate(AWKWARD_SPENDS * 3)
    ]
    lake = lake_table(rows)
    items = build_line_items(lake, DEFAULT_GRAIN)
    expected = exact_sum([r["spend"] for r in rows])
    assert decimal_sum_of_spend(lake) == expected
    assert cost_total(items) == expected
    assert line_item_cost_by_hour(items) == {"2025-01-31T23:00:00Z": expected}
    for cost in items["cost/cost"].to_pylist():
        assert NUMBER_PATTERN.match(cost), cost
        assert cost == "0" or not cost.endswith("0") or "." not in cost, cost


@pytest.mark.parametrize(
    ("spends", "expected"),
    [
        ([0.1, 0.2], "0.3"),
        ([2.5e-08], "0.000000025"),
        ([1e-12], "0.000000000001"),
        ([5e-20], "0.00000000000000000005"),
        ([1e15, 0.1], "1000000000000000.1"),
        ([3.0000000000000004e-05], "0.000030000000000000004"),
        ([100.0], "100"),
        ([0.5, 0.5], "1"),
        ([1e-7, 9e-7], "0.000001"),
    ],
)
def test_cost_strings_are_plain_exact_decimals(spends: list[float], expected: str) -> None:
    items = build_line_items(lake_table([{"spend": s} for s in spends]), DEFAULT_GRAIN)
    assert items["cost/cost"].to_pylist() == [expected]


@pytest.mark.parametrize("bad", [float("nan"), -0.01, float("inf"), 1e20, 1e40])
def test_unrepresentable_or_invalid_spend_raises(bad: float) -> None:
    lake = lake_table([{"spend": 0.1}, {"spend": bad}])
    with pytest.raises(ValueError, match=r"spend|summed exactly"):
        build_line_items(lake, DEFAULT_GRAIN)
    with pytest.raises(ValueError, match=r"spend|summed exactly"):
        decimal_sum_of_spend(lake)


def test_decimal_sum_by_hour_matches_line_items() -> None:
    rows = [
        {"spend": s, "start_time": HOUR + timedelta(minutes=37 * i)}
        for i, s in enumerate(AWKWARD_SPENDS)
    ]
    lake = lake_table(rows)
    by_hour = decimal_sum_by_hour(lake)
    items = build_line_items(lake, DEFAULT_GRAIN)
    sent = line_item_cost_by_hour(items)
    nonzero = {h.strftime("%Y-%m-%dT%H:00:00Z"): c for h, c in by_hour.items() if c}
    assert {h: c for h, c in sent.items() if c} == nonzero
    with localcontext() as ctx:
        ctx.prec = 200  # Python's default 28 digits would round this sum
        assert sum(by_hour.values(), Decimal(0)) == exact_sum([r["spend"] for r in rows])


# ---------------------------------------------------------------------------------------------
# Usage, failures, hours


def test_usage_amount_never_loses_tokens() -> None:
    lake = lake_table(
        [
            # LiteLLM embeddings: total 0, prompt 10
            {"model": "emb", "prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 0},
            # provider total above prompt + completion
            {"model": "chat", "prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 120},
            {"model": "chat", "prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        ]
    )
    items = build_line_items(lake, Grain.parse("model"))
    amounts = dict(
        zip(items["resource/tag:model"].to_pylist(), items["usage/amount"].to_pylist(), strict=True)
    )
    assert amounts == {"emb": "10", "chat": "130"}
    assert set(items["usage/units"].to_pylist()) == {"tokens"}


def test_failed_requests_without_cost_or_tokens_yield_no_line_item() -> None:
    lake = lake_table(
        [
            {"user_id": "a", "status": "failure"},
            {"user_id": "b", "status": "failure", "prompt_tokens": 12, "total_tokens": 12},
            {"user_id": "c", "status": "failure", "spend": 0.004},
            {"user_id": "d", "spend": 0.0, "prompt_tokens": 3, "total_tokens": 3},
        ]
    )
    items = build_line_items(lake, DEFAULT_GRAIN)
    by_user = {
        u: (c, a)
        for u, c, a in zip(
            items["resource/tag:user_id"].to_pylist(),
            items["cost/cost"].to_pylist(),
            items["usage/amount"].to_pylist(),
            strict=True,
        )
    }
    assert by_user == {"b": ("0", "12"), "c": ("0.004", "0"), "d": ("0", "3")}


def test_hours_are_utc_and_month_boundaries_hold() -> None:
    last = datetime(2025, 1, 31, 23, 59, 59, 999000, tzinfo=UTC)
    lake = lake_table(
        [
            {"spend": 0.5, "start_time": datetime(2025, 1, 31, 23, 0, tzinfo=UTC)},
            {"spend": 0.25, "start_time": last},
            {"spend": 0.125, "start_time": datetime(2025, 2, 1, 0, 0, tzinfo=UTC)},
        ]
    )
    items = build_line_items(lake, DEFAULT_GRAIN)
    assert line_item_cost_by_hour(items) == {
        "2025-01-31T23:00:00Z": Decimal("0.75"),
        "2025-02-01T00:00:00Z": Decimal("0.125"),
    }


# ---------------------------------------------------------------------------------------------
# CZRN and tags


def test_czrns_are_valid_unique_and_stable_for_awkward_models() -> None:
    rows = [{"model": m, "spend": 0.01, "provider": "Bedrock AI"} for m in AWKWARD_MODELS]
    rows.append({"model": "gpt-4o", "provider": None, "team_id": None, "spend": 0.02})
    rows.append({"model": "gpt-4o", "provider": "", "team_id": "", "spend": 0.02})
    lake = lake_table(rows)
    items = build_line_items(lake, DEFAULT_GRAIN)
    ids = items["resource/id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(rows) - 1  # null and "" are the same combination
    for czrn in ids:
        assert is_valid_czrn(czrn), czrn
        segments = czrn.split(":")
        assert segments[0:2] == ["czrn", "litellm"]
        assert segments[3] == "cross-region"
        assert segments[5] == "llm-usage"
        assert len(segments) == 7, "the local id must not contain ':'"
    by_model = dict(zip(items["resource/tag:model"].to_pylist(), ids, strict=True))
    assert by_model["ft:gpt-4o:org::abc"].startswith(
        "czrn:litellm:bedrock-ai:cross-region:team-1:llm-usage:ft-gpt-4o-org-abc-"
    )
    assert by_model["claude-3-haiku"].startswith(  # bedrock/us.anthropic.claude-3-haiku-...
        "czrn:litellm:bedrock-ai:cross-region:team-1:llm-usage:claude-3-haiku-"
    )

    shuffled = lake.take(random.Random(3).sample(range(lake.num_rows), lake.num_rows))
    again = build_line_items(shuffled, DEFAULT_GRAIN)
    assert again.equals(items)
    # A different hour of the same combinations keeps the same resource ids.
    later = build_line_items(
        lake.set_column(
            lake.schema.get_field_index("start_time"),
            "start_time",
            pa.array(
                [HOUR + timedelta(hours=5)] * lake.num_rows, LAKE_SCHEMA.field("start_time").type
            ),
        ),
        DEFAULT_GRAIN,
    )
    assert sorted(later["resource/id"].to_pylist()) == sorted(ids)


def test_values_containing_the_identity_separator_do_not_collide() -> None:
    lake = lake_table(
        [
            {"spend": 0.1, "team_id": "a\x1f", "team_alias": "b"},
            {"spend": 0.2, "team_id": "a", "team_alias": "\x1fb"},
            {"spend": 0.4, "team_id": "a\\", "team_alias": "u001fb"},
        ]
    )
    ids = build_line_items(lake, DEFAULT_GRAIN)["resource/id"].to_pylist()
    assert len(set(ids)) == 3


def test_missing_values_give_unknown_segments_and_unsent_tags() -> None:
    lake = lake_table(
        [
            {
                "spend": 0.3,
                "provider": None,
                "team_id": None,
                "team_alias": None,
                "api_key": None,
                "key_alias": None,
                "user_id": None,
            }
        ]
    )
    row = build_line_items(lake, DEFAULT_GRAIN).to_pylist()[0]
    assert row["resource/id"].startswith("czrn:litellm:unknown:cross-region:unknown:llm-usage:")
    assert row["resource/service"] == "unknown"
    assert row["resource/account"] == "unknown"
    for key in ("provider", "team_id", "team_alias", "api_key_prefix", "key_alias", "user_id"):
        assert row[TAG_PREFIX + key] is None  # not sent, never "None" or ""


def test_tags_are_constant_per_resource_id_and_never_counters() -> None:
    rng = random.Random(11)
    rows = []
    for i in range(3_000):
        team = rng.randrange(4)
        rows.append(
            {
                "start_time": HOUR + timedelta(minutes=rng.randrange(0, 6 * 60)),
                "model": rng.choice(AWKWARD_MODELS[:6]),
                "provider": rng.choice(["openai", "bedrock", None]),
                "team_id": f"team-{team}",
                # aliases get renamed over time: old and new alias both appear
                "team_alias": rng.choice([f"Team {team}", f"Team {team} (renamed)"]),
                "api_key": f"{rng.randrange(6):064x}",
                "key_alias": rng.choice(["k1", "k2", None]),
                "user_id": rng.choice(["u1", "u2", "u3"]),
                "request_tags": rng.choice([[], ["feature:search"], ["feature:chat", "env:prod"]]),
                "spend_logs_metadata": rng.choice([None, '{"job": "etl"}', '{"job": 7}']),
                "spend": rng.choice(AWKWARD_SPENDS),
                "prompt_tokens": rng.randrange(50),
                "total_tokens": rng.randrange(100),
                "status": "failure" if i % 17 == 0 else "success",
            }
        )
    lake = lake_table(rows)
    grain = Grain.parse("provider,model,team,api_key,user,tag:feature,meta:job,call_type")
    items = build_line_items(lake, grain)
    tag_columns = [c for c in items.column_names if c.startswith(TAG_PREFIX)]
    assert [c.removeprefix(TAG_PREFIX) for c in tag_columns] == [
        "provider",
        "model",
        "team_id",
        "team_alias",
        "api_key_prefix",
        "key_alias",
        "user_id",
        "call_type",
        "tag.feature",
        "meta.job",
    ]
    per_id = items.group_by("resource/id").aggregate([(c, "count_distinct") for c in tag_columns])
    for column in tag_columns:
        assert pc.max(per_id[f"{column}_count_distinct"]).as_py() <= 1, column
    # (hour, resource/id) is unique: one line item per hour and combination
    pairs = set(
        zip(items["time/usage_start"].to_pylist(), items["resource/id"].to_pylist(), strict=True)
    )
    assert len(pairs) == items.num_rows
    assert cost_total(items) == exact_sum([r["spend"] for r in rows])
    assert "2025-02-01T04:00:00Z" in set(items["time/usage_start"].to_pylist())


def test_api_key_hash_is_only_sent_as_a_prefix() -> None:
    full = "f" * 10 + "0123456789abcdef" * 3 + "0" * 6
    items = build_line_items(lake_table([{"api_key": full, "spend": 0.1}]), DEFAULT_GRAIN)
    row = items.to_pylist()[0]
    assert row[TAG_PREFIX + "api_key_prefix"] == full[:API_KEY_PREFIX_CHARS]
    assert full not in json.dumps(row)


def test_request_tag_and_metadata_dimensions() -> None:
    lake = lake_table(
        [
            {"spend": 0.1, "request_tags": ["feature:search", "feature:other", "env:prod"]},
            {"spend": 0.2, "request_tags": ["featurex:no", "env:dev"]},
            {"spend": 0.4, "request_tags": ["feature:a:b"], "spend_logs_metadata": '{"job": 5}'},
            {"spend": 0.8, "spend_logs_metadata": '{"job": {"b": 1, "a": [true]}}'},
            {"spend": 1.6, "spend_logs_metadata": '{"job": "nightly", "other": 1}'},
            {"spend": 3.2, "spend_logs_metadata": "[1, 2]"},
        ]
    )
    items = build_line_items(lake, Grain.parse("model,tag:feature,meta:job"))
    got = {
        (f, j): c
        for f, j, c in zip(
            items["resource/tag:tag.feature"].to_pylist(),
            items["resource/tag:meta.job"].to_pylist(),
            items["cost/cost"].to_pylist(),
            strict=True,
        )
    }
    assert got == {
        ("search", None): "0.1",
        (None, None): "3.4",  # 0.2 (no feature tag) + 3.2 (metadata not an object)
        ("a:b", "5"): "0.4",
        (None, '{"a":[true],"b":1}'): "0.8",
        (None, "nightly"): "1.6",
    }


def test_invalid_metadata_json_raises() -> None:
    lake = lake_table([{"spend": 0.1, "spend_logs_metadata": "{not json"}])
    with pytest.raises(ValueError, match="spend_logs_metadata"):
        build_line_items(lake, Grain.parse("model,meta:job"))


def test_grain_without_a_dimension_does_not_split_by_it() -> None:
    lake = lake_table(
        [
            {"spend": 0.1, "team_id": "a", "provider": "openai"},
            {"spend": 0.2, "team_id": "b", "provider": "bedrock"},
        ]
    )
    items = build_line_items(lake, Grain.parse("model"))
    assert items.num_rows == 1
    row = items.to_pylist()[0]
    assert row["cost/cost"] == "0.3"
    assert row["resource/id"].startswith("czrn:litellm:all:cross-region:all:llm-usage:gpt-4o-")
    assert (row["resource/service"], row["resource/account"]) == ("all", "all")


def test_output_is_strings_in_schema_order_for_chunked_input() -> None:
    part = lake_table([{"spend": 0.1}, {"spend": 0.2, "model": "b"}])
    lake = pa.concat_tables([part, part, part])
    grain = Grain.parse("provider,model,team,api_key,user,tag:feature")
    items = build_line_items(lake, grain)
    assert items.schema == line_item_schema(grain)
    assert all(pa.types.is_string(f.type) for f in items.schema)
    assert items.column_names[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    for column in BASE_COLUMNS:
        assert items[column].null_count == 0, column
    assert sorted(items["cost/cost"].to_pylist()) == ["0.3", "0.6"]
    assert set(items["lineitem/type"].to_pylist()) == {"Usage"}
    assert set(items["resource/region"].to_pylist()) == {"cross-region"}


def test_empty_lake_gives_empty_line_items() -> None:
    items = build_line_items(LAKE_SCHEMA.empty_table(), DEFAULT_GRAIN)
    assert items.num_rows == 0
    assert items.schema == line_item_schema(DEFAULT_GRAIN)
    assert decimal_sum_of_spend(LAKE_SCHEMA.empty_table()) == 0


def test_lake_without_needed_columns_is_rejected() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        build_line_items(lake_table([{"spend": 1.0}]).drop_columns(["team_alias"]), DEFAULT_GRAIN)


# ---------------------------------------------------------------------------------------------
# Attribution: one name per model, the master key, and rule changes

SONNET_ROUTES = [
    {"call_type": "acompletion", "model": "anthropic/claude-sonnet-4-5-20250929", "spend": 0.1},
    {
        "call_type": "anthropic_messages",
        "model": "anthropic/claude-sonnet-4-5-20250929",
        "spend": 0.2,
    },
    {"call_type": "pass_through_endpoint", "model": "claude-sonnet-4-5-20250929", "spend": 0.4},
    {"call_type": "acompletion", "model": "anthropic/claude-sonnet-4-5", "spend": 0.8},
]


def test_one_model_on_every_route_is_one_resource_and_one_usage_family() -> None:
    lake = lake_table([{**row, "provider": "anthropic"} for row in SONNET_ROUTES])
    items = build_line_items(lake, DEFAULT_GRAIN)
    assert items.num_rows == 1
    row = items.to_pylist()[0]
    assert row["resource/usage_family"] == row[TAG_PREFIX + "model"] == "claude-sonnet-4-5"
    assert ":llm-usage:claude-sonnet-4-5-" in row["resource/id"]
    assert row["cost/cost"] == "1.5"


def test_model_raw_splits_by_logged_spelling_under_the_same_usage_family() -> None:
    lake = lake_table([{**row, "provider": "anthropic"} for row in SONNET_ROUTES])
    items = build_line_items(lake, Grain.parse("provider,model,team,api_key,user,model_raw"))
    assert sorted(items[TAG_PREFIX + "model_raw"].to_pylist()) == [
        "anthropic/claude-sonnet-4-5",
        "anthropic/claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5-20250929",
    ]
    assert set(items["resource/usage_family"].to_pylist()) == {"claude-sonnet-4-5"}
    assert len(set(items["resource/id"].to_pylist())) == 3
    assert cost_total(items) == exact_sum([r["spend"] for r in SONNET_ROUTES])
    with pytest.raises(ValueError, match="model_raw refines model"):
        Grain.parse("provider,model_raw")


def test_master_key_traffic_is_labelled_as_such() -> None:
    master = {"api_key": MASTER_KEY, "key_alias": None, "user_id": "default_user_id"}
    lake = lake_table(
        [
            {**master, "team_id": None, "team_alias": None, "spend": 0.000225},
            {**master, "team_id": "team-ops", "team_alias": "Ops", "spend": 0.1},
        ]
    )
    by_account = {r["resource/account"]: r for r in build_line_items(lake).to_pylist()}
    assert set(by_account) == {"master-key", "Ops"}
    for row in by_account.values():
        assert row[TAG_PREFIX + "api_key_prefix"] == row[TAG_PREFIX + "key_alias"] == "master-key"
        assert "litellm_prox" not in json.dumps(row)
    assert ":cross-region:master-key:llm-usage:" in by_account["master-key"]["resource/id"]
    assert ":cross-region:team-ops:llm-usage:" in by_account["Ops"]["resource/id"]
    # Without the key in the grain nothing tells master-key traffic apart: it has no owner.
    row = build_line_items(lake.slice(0, 1), Grain.parse("provider,model,team")).to_pylist()[0]
    assert row["resource/account"] == "unknown"


def _raw_model_names(models: pa.ChunkedArray, providers: pa.ChunkedArray) -> pa.Array:
    """The naming rule before one name per model: LiteLLM's spelling as it is."""
    return pc.fill_null(models.combine_chunks(), "")


def test_a_changed_mapping_rule_makes_new_resources_and_never_relabels_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [{**row, "provider": "anthropic"} for row in SONNET_ROUTES] + [
        {"model": "gpt-4o", "spend": 0.3},  # the same name under both rules
        {"model": "gpt-4o", "api_key": MASTER_KEY, "key_alias": None, "spend": 0.5},
    ]
    lake = lake_table(rows)
    later = lake.set_column(
        lake.schema.get_field_index("start_time"),
        "start_time",
        pa.array([HOUR + timedelta(hours=1)] * lake.num_rows, LAKE_SCHEMA.field("start_time").type),
    )
    hour_two = HOUR + timedelta(hours=1)

    with monkeypatch.context() as patched:
        patched.setattr(cbf, "canonical_model_names", _raw_model_names)
        patched.setattr(cbf, "MASTER_KEY_LABEL", "proxy-admin")
        before = build_line_items(lake)
    registry = merge_known_tags(before.schema.empty_table(), before)
    after = build_line_items(later)
    assert tags_constant_per_resource(hour_two, after, registry).passed

    kept = set(before["resource/id"].to_pylist()) & set(after["resource/id"].to_pylist())
    assert len(kept) == 1  # only virtual-key gpt-4o is described the same under both rules
    assert cost_total(before) == cost_total(after) == exact_sum([r["spend"] for r in rows])


# ---------------------------------------------------------------------------------------------
# Lineage and documentation


@pytest.mark.parametrize(
    "grain",
    [DEFAULT_GRAIN, Grain.parse("model,model_raw,end_user,tag:feature,meta:job")],
)
def test_lineage_and_mapping_doc_cover_every_column(grain: Grain) -> None:
    lineage = line_item_lineage(grain)
    assert list(lineage) == grain.columns()
    lake_columns = set(LAKE_SCHEMA.names)
    for column, sources in lineage.items():
        assert set(sources) <= lake_columns, column
    assert [row[0] for row in mapping_doc(grain)] == grain.columns()
    assert all(len(row) == 3 and all(row) for row in mapping_doc(grain))


def test_default_lineage_constants_match_the_default_grain() -> None:
    assert line_item_lineage(DEFAULT_GRAIN) == LINE_ITEM_LINEAGE
    assert mapping_doc(DEFAULT_GRAIN) == MAPPING_DOC
    assert LINE_ITEM_LINEAGE["cost/cost"] == ["spend"]
    assert "api_key" in LINE_ITEM_LINEAGE["resource/id"]
