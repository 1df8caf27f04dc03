"""Turn a source's extract into lake rows: pure, vectorized functions over Arrow.

LiteLLM stores absent values as empty strings, success as NULL status on older rows, cache hits
as the strings "True"/"False"/"None", request tags as a JSON list that mixes the caller's tags
with automatic ``User-Agent:`` tags, and an ``input_cost`` that already contains the cache costs
listed beside it. PostgreSQL prints JSON its own way (jsonb:
``{"zeta": "z", "a_long_key": 1}``), the REST API another. The lake holds none of those quirks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA, LAKE_SCHEMA

USER_AGENT_PREFIX = "User-Agent:"

# Text columns where LiteLLM writes '' for "none".
_EMPTY_MEANS_NULL = (
    "litellm_call_id",
    "model_id",
    "model_group",
    "custom_llm_provider",
    "api_key",
    "key_alias",
    "team_id",
    "team_alias",
    "organization_id",
    "user",
    "end_user",
    "session_id",
    "spend_logs_metadata",
)
_ZERO_IF_NULL = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
)
_RENAMED = {"custom_llm_provider": "provider", "user": "user_id"}


def canonical_json(value: object) -> str:
    """The one text of a JSON value in the lake, whichever source read it: keys sorted, no
    spaces, non-ASCII as it is. Downstream (e.g. ``meta:<key>`` grain tags) uses it too."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ExtractSchemaError(ValueError):
    """A source yielded columns that do not match ``EXTRACT_SCHEMA``."""


@dataclass(frozen=True)
class AliasLookup:
    """Key and team aliases from LiteLLM's tables, for rows whose metadata lacks them.

    Metadata holds the alias as of request time, so it wins; the tables only fill gaps (keys and
    teams can be renamed or deleted since).
    """

    key_aliases: Mapping[str, str] = field(default_factory=dict)
    team_aliases: Mapping[str, str] = field(default_factory=dict)


def _null_if_empty(values: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    empty = pc.equal(values, "")
    return pc.if_else(empty, pa.scalar(None, values.type), values)


def _fill_from(
    values: pa.Array | pa.ChunkedArray, keys: pa.Array | pa.ChunkedArray, lookup: Mapping[str, str]
) -> pa.Array | pa.ChunkedArray:
    if not lookup:
        return values
    known = pa.array(list(lookup.keys()), pa.string())
    aliases = pa.array(list(lookup.values()), pa.string())
    found = pc.take(aliases, pc.index_in(keys, value_set=known))
    return pc.coalesce(values, found)


def _parse_cache_hit(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    lowered = pc.utf8_lower(values)
    return pc.if_else(
        pc.equal(lowered, "true"),
        True,
        pc.if_else(pc.equal(lowered, "false"), pa.scalar(False), pa.scalar(None, pa.bool_())),
    )


def _split_tags(tags_json: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """Split JSON tag lists into (caller tags, User-Agent tags).

    Requests repeat a handful of tag lists, so each distinct JSON text is parsed once and the
    results are taken back out by dictionary index.
    """
    if isinstance(tags_json, pa.ChunkedArray):
        # Not pa.chunked_array([column]): that converts a ChunkedArray value by value in Python.
        tags_json = tags_json.combine_chunks()
    encoded = pc.dictionary_encode(tags_json)
    user_tags: list[list[str]] = []
    agent_tags: list[list[str]] = []
    for text in encoded.dictionary.to_pylist():
        parsed = json.loads(text) if text else []
        tags = [str(tag) for tag in parsed] if isinstance(parsed, list) else []
        user_tags.append([t for t in tags if not t.startswith(USER_AGENT_PREFIX)])
        agent_tags.append([t for t in tags if t.startswith(USER_AGENT_PREFIX)])
    empty_list_type = pa.list_(pa.string())
    indices = pc.fill_null(encoded.indices, len(user_tags))
    user_tags.append([])
    agent_tags.append([])
    return (
        pc.take(pa.array(user_tags, empty_list_type), indices),
        pc.take(pa.array(agent_tags, empty_list_type), indices),
    )


def _canonical_json_texts(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """JSON texts rewritten by ``canonical_json``, each distinct text parsed once.

    A JSON ``null`` becomes a null; a text that is not JSON is kept as it is (nothing is lost;
    a grain that needs its keys fails there, naming it)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    encoded = pc.dictionary_encode(texts)
    canonical: list[str | None] = []
    for text in encoded.dictionary.to_pylist():
        try:
            value = json.loads(text)
        except ValueError:
            canonical.append(text)
            continue
        canonical.append(None if value is None else canonical_json(value))
    return pc.take(pa.array(canonical, pa.string()), encoded.indices)


def _zero_where(
    costs: pa.Array | pa.ChunkedArray, known_zero: pa.Array | pa.ChunkedArray
) -> pa.Array | pa.ChunkedArray:
    """A missing cost is 0 where it provably is; otherwise it stays missing."""
    return pc.if_else(pc.and_(pc.is_null(costs), known_zero), 0.0, costs)


def _cost_components(
    columns: dict[str, pa.Array | pa.ChunkedArray],
) -> dict[str, pa.Array | pa.ChunkedArray]:
    """LiteLLM's cost breakdown as four parts of spend that never overlap.

    LiteLLM's ``input_cost`` includes ``cache_read_cost`` and ``cache_creation_cost``, so the
    input part here is what is left of it (floored at 0 against float rounding). A row with a
    breakdown lists cache costs only when there are some, so an absent one is 0. A row without
    a breakdown (the ``/anthropic`` pass-through, failures) gets 0 where it is certain: no
    spend at all, or no tokens of that kind. The rest stays null: splitting spend needs the
    model's per-token prices, which a row only carries in ``metadata.model_map_information``,
    and the pipeline never reads that.
    """
    tokens_of = {
        "uncached_input": pc.subtract(
            columns["prompt_tokens"],
            pc.add(columns["cache_read_tokens"], columns["cache_creation_tokens"]),
        ),
        "completion": columns["completion_tokens"],
        "cache_read": columns["cache_read_tokens"],
        "cache_creation": columns["cache_creation_tokens"],
    }
    free = pc.equal(pc.fill_null(columns["spend"], -1.0), 0.0)

    def none_of(tokens: str) -> pa.Array | pa.ChunkedArray:
        return pc.or_(free, pc.less_equal(tokens_of[tokens], 0))

    has_breakdown = pc.is_valid(columns["input_cost"])
    cache_read = _zero_where(
        columns["cache_read_cost"], pc.or_(has_breakdown, none_of("cache_read"))
    )
    cache_creation = _zero_where(
        columns["cache_creation_cost"], pc.or_(has_breakdown, none_of("cache_creation"))
    )
    uncached_input = pc.max_element_wise(
        pc.subtract(
            pc.subtract(columns["input_cost"], pc.fill_null(cache_read, 0.0)),
            pc.fill_null(cache_creation, 0.0),
        ),
        0.0,
        skip_nulls=False,
    )
    return {
        "uncached_input_cost": _zero_where(uncached_input, none_of("uncached_input")),
        "output_cost": _zero_where(columns["output_cost"], none_of("completion")),
        "cache_read_cost": cache_read,
        "cache_creation_cost": cache_creation,
    }


def check_extract_schema(table: pa.Table | pa.RecordBatch) -> None:
    if table.schema.names != EXTRACT_SCHEMA.names:
        missing = sorted(set(EXTRACT_SCHEMA.names) - set(table.schema.names))
        extra = sorted(set(table.schema.names) - set(EXTRACT_SCHEMA.names))
        raise ExtractSchemaError(
            f"extract columns differ from EXTRACT_SCHEMA: missing {missing}, unexpected {extra}"
        )


def normalize(extract: pa.Table | pa.RecordBatch, aliases: AliasLookup | None = None) -> pa.Table:
    """Map an ``EXTRACT_SCHEMA`` table to ``LAKE_SCHEMA``; row order and count are kept."""
    check_extract_schema(extract)
    table = pa.Table.from_batches([extract]) if isinstance(extract, pa.RecordBatch) else extract
    table = table.cast(EXTRACT_SCHEMA)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        name: table.column(name) for name in table.column_names
    }
    for name in _EMPTY_MEANS_NULL:
        columns[name] = _null_if_empty(columns[name])
    for name in _ZERO_IF_NULL:
        columns[name] = pc.fill_null(columns[name], 0)
    status = _null_if_empty(columns["status"])
    columns["status"] = pc.fill_null(status, "success")
    columns["cache_hit"] = _parse_cache_hit(columns["cache_hit"])
    if aliases is not None:
        columns["key_alias"] = _fill_from(
            columns["key_alias"], columns["api_key"], aliases.key_aliases
        )
        columns["team_alias"] = _fill_from(
            columns["team_alias"], columns["team_id"], aliases.team_aliases
        )
    columns["request_tags"], columns["user_agent_tags"] = _split_tags(columns["request_tags"])
    columns["spend_logs_metadata"] = _canonical_json_texts(columns["spend_logs_metadata"])
    columns.update(_cost_components(columns))
    for name in ("start_time", "end_time", "created_at"):
        columns[name] = columns[name].cast(LAKE_SCHEMA.field(name).type)
    for old, new in _RENAMED.items():
        columns[new] = columns.pop(old)
    return pa.table([columns[f.name] for f in LAKE_SCHEMA], schema=LAKE_SCHEMA)
