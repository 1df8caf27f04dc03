"""One model, one name: the canonical model rule, alone and over Arrow columns."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cz_pipeline.lib.models import canonical_model_name, canonical_model_names
from cz_pipeline_tests.litellm_samples import read_alias_rows, read_route_rows


@pytest.mark.parametrize(
    ("model", "provider", "name"),
    [
        # Claude Sonnet 4.5 as LiteLLM 1.108.7 logged it on each route, and as other clouds name it
        ("anthropic/claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5"),  # chat
        ("claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5"),  # /anthropic
        ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),  # alias
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock", "claude-sonnet-4-5"),
        (
            "bedrock/converse/eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "bedrock",
            "claude-sonnet-4-5",
        ),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock", "claude-sonnet-4-5"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock", "claude-sonnet-4-5"),
        ("vertex_ai/claude-sonnet-4-5@20250929", "vertex_ai", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "vertex_ai", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet-latest", "anthropic", "claude-3-5-sonnet"),
        # OpenAI spellings
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-2024-08-06", "openai", "gpt-4o"),
        ("azure/gpt-4o-mini-2024-07-18", "azure", "gpt-4o-mini"),
        ("openai/text-embedding-3-small", "openai", "text-embedding-3-small"),
        # kept as they are
        ("openai/in-house-llm-v2", "openai", "in-house-llm-v2"),
        ("gpt-4-0613", "openai", "gpt-4-0613"),  # four digits are not a date
        ("llama-3-70b-8192", "groq", "llama-3-70b-8192"),
        ("ft:gpt-4o-2024-08-06:org::abc", "openai", "ft:gpt-4o-2024-08-06:org::abc"),
        ("anthropic.claude-v2:1", "bedrock", "claude-v2:1"),  # no snapshot date: revision kept
        ("us.amazon.nova-pro-v1:0", "bedrock", "amazon.nova-pro-v1:0"),
        ("gpt-4.1", "openai", "gpt-4.1"),
        ("GPT-4o", "openai", "GPT-4o"),
        # a prefix that does not repeat the row's provider says something: it stays
        ("openai/gpt-4o", "", "openai/gpt-4o"),
        ("openai/gpt-4o", None, "openai/gpt-4o"),
        ("hosted_vllm/meta-llama/Llama-3-8B", "hosted_vllm", "meta-llama/Llama-3-8B"),
        ("unknown-model", "", "unknown-model"),
        ("", "openai", ""),
    ],
)
def test_the_rule_on_each_spelling(model: str, provider: str | None, name: str) -> None:
    assert canonical_model_name(model, provider) == name


def test_the_rule_is_idempotent() -> None:
    for model in (
        "anthropic/claude-sonnet-4-5-20250929",
        "us.anthropic.claude-opus-4-1-20250805-v1:0",
    ):
        once = canonical_model_name(model, "anthropic")
        assert canonical_model_name(once, "anthropic") == once


def test_columns_are_named_per_distinct_pair_keeping_rows_and_nulls() -> None:
    models = pa.chunked_array(
        [
            ["openai/gpt-4o", "claude-sonnet-4-5-20250929", None],
            ["openai/gpt-4o", "openai/gpt-4o", "anthropic/claude-sonnet-4-5"],
        ]
    )
    providers = pa.chunked_array([["openai", "anthropic", "openai"], [None, "openai", "anthropic"]])
    assert canonical_model_names(models, providers).to_pylist() == [
        "gpt-4o",
        "claude-sonnet-4-5",
        "",
        "openai/gpt-4o",  # no provider: nothing says the prefix is redundant
        "gpt-4o",
        "claude-sonnet-4-5",
    ]
    empty = pa.array([], pa.string())
    assert canonical_model_names(empty, empty).to_pylist() == []


def test_every_route_of_the_real_rows_names_a_model_once() -> None:
    rows = read_route_rows() + read_alias_rows()
    names = canonical_model_names(
        pa.array([r["model"] for r in rows]), pa.array([r["custom_llm_provider"] for r in rows])
    ).to_pylist()
    by_route: dict[str, set[str]] = {}
    for row, name in zip(rows, names, strict=True):
        by_route.setdefault(name, set()).add(row["call_type"])
    assert set(by_route) == {
        "gpt-4o",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "text-embedding-3-small",
        "in-house-llm-v2",
    }
    assert by_route["claude-sonnet-4-5"] == {
        "acompletion",
        "anthropic_messages",
        "pass_through_endpoint",
    }
