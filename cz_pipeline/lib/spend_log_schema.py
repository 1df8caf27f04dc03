"""The two table contracts of the spend-log lake.

``EXTRACT_SCHEMA`` is what every source (PostgreSQL, REST, synthetic) yields: LiteLLM's values as
they are stored, under our column names, with the metadata keys we need already pulled out.
``LAKE_SCHEMA`` is what :mod:`cz_pipeline.lib.normalize` turns it into and what the Parquet lake
holds. Keeping the two apart lets every source share one normalization.
"""

from __future__ import annotations

import pyarrow as pa

UTC_MS = pa.timestamp("ms", tz="UTC")
NAIVE_MS = pa.timestamp("ms")


def _field(name: str, type_: pa.DataType, description: str, required: bool = False) -> pa.Field:
    """Every field is nullable in Arrow and Parquet, so a bad row can still be written to
    quarantine; ``required`` is what the checks enforce and the column schema shows."""
    metadata = {"description": description, "required": "true" if required else "false"}
    return pa.field(name, type_, nullable=True, metadata=metadata)


def is_required(field: pa.Field) -> bool:
    return (field.metadata or {}).get(b"required") == b"true"


# Columns of "LiteLLM_SpendLogs" that may be absent on older LiteLLM versions: a missing one is
# extracted as nulls and reported. Everything else the extract names is required.
OPTIONAL_SOURCE_COLUMNS: dict[str, str] = {
    "status": "text",
    "organization_id": "text",
    "litellm_call_id": "text",
    "created_at": "timestamp(3)",
    "request_duration_ms": "integer",
    "session_id": "text",
}

EXTRACT_SCHEMA = pa.schema(
    [
        _field("request_id", pa.string(), '"request_id"'),
        _field("litellm_call_id", pa.string(), '"litellm_call_id" (newer LiteLLM only)'),
        _field("call_type", pa.string(), '"call_type"'),
        _field("status", pa.string(), '"status": success, failure or NULL'),
        _field("start_time", NAIVE_MS, '"startTime", naive UTC'),
        _field("end_time", NAIVE_MS, '"endTime", naive UTC'),
        _field("created_at", NAIVE_MS, '"created_at", naive UTC'),
        _field("request_duration_ms", pa.int64(), '"request_duration_ms"'),
        _field("model", pa.string(), '"model"'),
        _field("model_id", pa.string(), '"model_id"'),
        _field("model_group", pa.string(), '"model_group"'),
        _field("custom_llm_provider", pa.string(), '"custom_llm_provider"'),
        _field("api_key", pa.string(), '"api_key" (SHA-256 of the key, never the key)'),
        _field("key_alias", pa.string(), "metadata.user_api_key_alias"),
        _field("team_id", pa.string(), '"team_id"'),
        _field("team_alias", pa.string(), "metadata.user_api_key_team_alias"),
        _field("organization_id", pa.string(), '"organization_id"'),
        _field("user", pa.string(), '"user"'),
        _field("end_user", pa.string(), '"end_user"'),
        _field("session_id", pa.string(), '"session_id"'),
        _field("spend", pa.float64(), '"spend"'),
        _field("prompt_tokens", pa.int64(), '"prompt_tokens"'),
        _field("completion_tokens", pa.int64(), '"completion_tokens"'),
        _field("total_tokens", pa.int64(), '"total_tokens"'),
        _field("cache_read_tokens", pa.int64(), "metadata.usage_object.cache_read_input_tokens"),
        _field(
            "cache_creation_tokens", pa.int64(), "metadata.usage_object.cache_creation_input_tokens"
        ),
        _field("input_cost", pa.float64(), "metadata.cost_breakdown.input_cost"),
        _field("output_cost", pa.float64(), "metadata.cost_breakdown.output_cost"),
        _field("cache_read_cost", pa.float64(), "metadata.cost_breakdown.cache_read_cost"),
        _field("cache_creation_cost", pa.float64(), "metadata.cost_breakdown.cache_creation_cost"),
        _field("cache_hit", pa.string(), '"cache_hit": "True", "False", "None" or empty'),
        _field("request_tags", pa.string(), '"request_tags" as JSON text'),
        _field("spend_logs_metadata", pa.string(), "metadata.spend_logs_metadata as JSON text"),
        _field(
            "row_problems",
            pa.string(),
            "Why the row's values cannot be read as LiteLLM writes them (field and value); "
            "null when they can",
        ),
    ]
)

_TAGS = pa.list_(pa.string())

LAKE_SCHEMA = pa.schema(
    [
        _field(
            "request_id",
            pa.string(),
            "LiteLLM's row id: provider response id or call uuid.",
            required=True,
        ),
        _field("litellm_call_id", pa.string(), "LiteLLM's own per-call uuid, where recorded."),
        _field("call_type", pa.string(), "acompletion, aembedding, aresponses, ...", required=True),
        _field(
            "status",
            pa.string(),
            "success or failure (LiteLLM's NULL means success).",
            required=True,
        ),
        _field(
            "start_time",
            UTC_MS,
            "Request start, UTC; the hour partition is taken from it.",
            required=True,
        ),
        _field("end_time", UTC_MS, "Request end, UTC."),
        _field("created_at", UTC_MS, "When LiteLLM wrote the row, UTC (newer LiteLLM only)."),
        _field("request_duration_ms", pa.int64(), "End minus start, milliseconds."),
        _field(
            "model", pa.string(), "Provider model as called, e.g. openai/gpt-4o.", required=True
        ),
        _field("model_id", pa.string(), "Router deployment id."),
        _field("model_group", pa.string(), "Public model name the client asked for."),
        _field("provider", pa.string(), "LLM provider (custom_llm_provider), e.g. openai."),
        _field(
            "api_key",
            pa.string(),
            "SHA-256 hash of the virtual key (never a raw key); litellm_proxy_master_key for "
            "master-key calls.",
        ),
        _field("key_alias", pa.string(), "Key alias at request time, else from the key tables."),
        _field("team_id", pa.string(), "Team of the key."),
        _field("team_alias", pa.string(), "Team alias at request time, else from the team table."),
        _field("organization_id", pa.string(), "Organization of the key."),
        _field("user_id", pa.string(), "Internal LiteLLM user of the key."),
        _field("end_user", pa.string(), "Customer id passed by the caller (OpenAI `user`)."),
        _field("session_id", pa.string(), "LiteLLM session or trace id."),
        _field(
            "spend",
            pa.float64(),
            "Cost in USD as LiteLLM computed it (0 if unpriced).",
            required=True,
        ),
        _field("prompt_tokens", pa.int64(), "Input tokens, cached ones included.", required=True),
        _field("completion_tokens", pa.int64(), "Output tokens.", required=True),
        _field(
            "total_tokens", pa.int64(), "Total tokens as the provider reported them.", required=True
        ),
        _field(
            "cache_read_tokens", pa.int64(), "Prompt-cache read tokens (0 if none).", required=True
        ),
        _field(
            "cache_creation_tokens",
            pa.int64(),
            "Prompt-cache write tokens (0 if none).",
            required=True,
        ),
        _field(
            "uncached_input_cost",
            pa.float64(),
            "Input tokens not read from or written to the prompt cache, USD. The four cost "
            "columns are disjoint parts of spend; null when LiteLLM gave no breakdown.",
        ),
        _field("output_cost", pa.float64(), "Output part of spend, USD."),
        _field("cache_read_cost", pa.float64(), "Prompt-cache read part of spend, USD."),
        _field("cache_creation_cost", pa.float64(), "Prompt-cache write part of spend, USD."),
        _field("cache_hit", pa.bool_(), "Answered from LiteLLM's cache; null when unknown."),
        _field(
            "request_tags",
            _TAGS,
            "Caller, key and team tags (User-Agent tags removed).",
            required=True,
        ),
        _field(
            "user_agent_tags", _TAGS, "LiteLLM's automatic `User-Agent: ...` tags.", required=True
        ),
        _field("spend_logs_metadata", pa.string(), "Caller's spend_logs_metadata, JSON text."),
        _field(
            "row_problems",
            pa.string(),
            "Why LiteLLM's row could not be read in full (field and value), e.g. metadata that is "
            "not a JSON object; its hour is held back. Null for sound rows.",
        ),
    ]
)


def empty_extract() -> pa.Table:
    return EXTRACT_SCHEMA.empty_table()


def column_descriptions(schema: pa.Schema = LAKE_SCHEMA) -> dict[str, str]:
    return {f.name: (f.metadata or {}).get(b"description", b"").decode() for f in schema}
