"""Seeded, realistic LiteLLM traffic: as an Arrow extract, or written into LiteLLM's own tables.

The demo, the tests and the benchmarks need LiteLLM data without a LiteLLM proxy. This module
produces rows shaped like the ones a real LiteLLM 1.108 writes (see
``reference/litellm_samples/``): provider response ids, SHA-256 key hashes, ``''`` where LiteLLM
stores empty strings, ``"None"``/``"False"``/``"True"`` cache-hit strings, JSON request tags with
the automatic ``User-Agent:`` pair, failures with spend 0, embeddings with ``total_tokens`` 0,
Anthropic prompt-cache tokens, unpriced models, deleted keys and rows whose metadata lacks the
aliases.

Two views of the same rows:

* :func:`generate_extract` returns them in ``EXTRACT_SCHEMA``, exactly what the PostgreSQL source
  reads back from the tables :func:`write_to_postgres` fills (same spend bits, same JSON text).
* :func:`write_to_postgres` writes them into ``"LiteLLM_SpendLogs"`` (with ``COPY``), fills the
  key, team and deleted-key tables and ``"LiteLLM_DailyUserSpend"``.

Determinism: each UTC hour has its own random stream derived from ``(seed, hour)``, so an hour's
rows do not depend on the window it was generated in. The number of rows in an hour follows a daily
rhythm, see :func:`hour_factor`. The keys and teams depend on the seed only.

psycopg2 is imported only by :func:`write_to_postgres`, so generating Arrow needs no database
driver.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from cz_pipeline.lib import litellm_tables
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour
from cz_pipeline.lib.spend_log_schema import EXTRACT_SCHEMA

MASTER_KEY_API_KEY: Final = "litellm_proxy_master_key"
MASTER_KEY_USER: Final = "default_user_id"

# Daily rhythm: the hour's row count is rows_per_hour * hour_factor(hour), lowest at 03:00 UTC.
RHYTHM_MIN_FACTOR: Final = 0.4
RHYTHM_MAX_FACTOR: Final = 1.6
_RHYTHM_TROUGH_HOUR: Final = 3

FAILURE_RATE: Final = 0.03
"""Share of requests to known models that fail (status 'failure', spend 0)."""
UNKNOWN_MODEL_SHARE: Final = 0.003
"""Share of requests naming a model the proxy does not know (always failures)."""
CACHE_HIT_RATE: Final = 0.015
"""Share of successful chat requests answered from LiteLLM's cache (spend 0)."""
ALIASLESS_RATE: Final = 0.01
"""Share of virtual-key rows whose metadata lacks the key and team aliases."""
ALIASLESS_RATE_DELETED_KEYS: Final = 0.10
"""The same for deleted keys (older proxies wrote less metadata)."""
END_USER_RATE: Final = 0.2
STREAMING_RATE: Final = 0.4
RESPONSES_API_RATE: Final = 0.08
SPEND_LOGS_METADATA_RATE: Final = 0.7

_CHUNK_BYTES: Final = 64 * 1024 * 1024
_MAX_CHUNK_ROWS: Final = 20_000
_MIN_CHUNK_ROWS: Final = 1_000

# --------------------------------------------------------------------------------------------
# The world: models, teams, keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticModel:
    """A deployment behind the proxy; prices in USD per token, ``None`` = not in the price map."""

    model: str
    provider: str
    model_group: str
    mode: str  # "chat", "embedding" or "unknown"
    input_cost: float | None
    output_cost: float | None
    cache_read_cost: float | None = None
    cache_creation_cost: float | None = None
    id_style: str = "litellm"  # response id: "openai", "anthropic" or LiteLLM's "litellm"
    api_base: str = ""
    max_input_tokens: int = 128_000
    max_output_tokens: int = 16_384

    @property
    def priced(self) -> bool:
        return self.input_cost is not None

    @property
    def model_id(self) -> str:
        """Router deployment id: a stable hash, '' for requests that never reached a router."""
        if self.mode == "unknown":
            return ""
        return hashlib.sha256(f"deployment:{self.model}".encode()).hexdigest()


# Prices are LiteLLM's price-map values (USD per token: input, output, cache read, cache write).
# fmt: off
MODELS: Final[tuple[SyntheticModel, ...]] = (
    SyntheticModel("openai/gpt-4o", "openai", "gpt-4o", "chat",
                   2.5e-6, 1e-5, 1.25e-6, id_style="openai"),
    SyntheticModel("openai/gpt-4o-mini", "openai", "gpt-4o-mini", "chat",
                   1.5e-7, 6e-7, 7.5e-8, id_style="openai"),
    SyntheticModel("ft:gpt-4o:org::abc", "openai", "support-ft", "chat",
                   3.75e-6, 1.5e-5, id_style="openai"),
    SyntheticModel("openai/text-embedding-3-small", "openai", "text-embedding-3-small",
                   "embedding", 2e-8, 0.0, max_input_tokens=8191, max_output_tokens=0),
    SyntheticModel("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", "chat",
                   3e-6, 1.5e-5, 3e-7, 3.75e-6, id_style="anthropic",
                   max_input_tokens=200_000, max_output_tokens=64_000),
    SyntheticModel("anthropic/claude-haiku-4-5", "anthropic", "claude-haiku", "chat",
                   1e-6, 5e-6, 1e-7, 1.25e-6, id_style="anthropic",
                   max_input_tokens=200_000, max_output_tokens=64_000),
    SyntheticModel("bedrock/us.anthropic.claude-3-haiku-20240307-v1:0", "bedrock",
                   "claude-3-haiku-bedrock", "chat", 2.5e-7, 1.25e-6,
                   max_input_tokens=200_000, max_output_tokens=4096),
    SyntheticModel("bedrock/amazon.titan-embed-text-v2:0", "bedrock", "titan-embed",
                   "embedding", 2e-8, 0.0, max_input_tokens=8192, max_output_tokens=0),
    SyntheticModel("vertex_ai/gemini-2.5-pro", "vertex_ai", "gemini-2.5-pro", "chat",
                   1.25e-6, 1e-5, max_input_tokens=1_048_576, max_output_tokens=65_535),
    SyntheticModel("vertex_ai/gemini-2.5-flash", "vertex_ai", "gemini-flash", "chat",
                   3e-7, 2.5e-6, max_input_tokens=1_048_576, max_output_tokens=65_535),
    SyntheticModel("vertex_ai/text-embedding-005", "vertex_ai", "vertex-embed", "embedding",
                   2.5e-8, 0.0, max_input_tokens=2048, max_output_tokens=0),
    SyntheticModel("azure/gpt-4.1", "azure", "gpt-4.1", "chat", 2e-6, 8e-6, 5e-7,
                   id_style="openai", api_base="https://contoso-eastus2.openai.azure.com/",
                   max_input_tokens=1_047_576, max_output_tokens=32_768),
    # Unpriced: a custom Azure deployment name and a Bedrock imported model are not in
    # LiteLLM's price map, so LiteLLM logs their tokens with spend 0.
    SyntheticModel("azure/contoso-gpt4o-eu", "azure", "gpt-4o-eu", "chat", None, None,
                   id_style="openai", api_base="https://contoso-westeurope.openai.azure.com/"),
    SyntheticModel("bedrock/arn:aws:bedrock:us-east-1:123456789012:imported-model/k2x9q7",
                   "bedrock", "llama-finetune", "chat", None, None),
    # A model name the proxy does not know: always a failure, logged without provider or group.
    SyntheticModel("unknown-model", "", "", "unknown", None, None),
)
# fmt: on
_MODEL_INDEX: Final = {m.model: i for i, m in enumerate(MODELS)}
_UNKNOWN_MODEL: Final = _MODEL_INDEX["unknown-model"]
UNPRICED_MODELS: Final = frozenset(m.model for m in MODELS if not m.priced and m.mode != "unknown")

# Which models each kind of client calls (relative weights).
_PROFILES: Final[dict[str, dict[str, float]]] = {
    "assistant": {
        "openai/gpt-4o": 30,
        "openai/gpt-4o-mini": 35,
        "anthropic/claude-sonnet-4-5": 15,
        "anthropic/claude-haiku-4-5": 10,
        "vertex_ai/gemini-2.5-flash": 5,
        "azure/gpt-4.1": 5,
        "azure/contoso-gpt4o-eu": 1.5,
    },
    "rag": {
        "openai/text-embedding-3-small": 35,
        "bedrock/amazon.titan-embed-text-v2:0": 10,
        "vertex_ai/text-embedding-005": 10,
        "openai/gpt-4o-mini": 20,
        "anthropic/claude-sonnet-4-5": 15,
        "vertex_ai/gemini-2.5-pro": 5,
        "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0": 5,
    },
    "batch": {
        "openai/gpt-4o-mini": 30,
        "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0": 25,
        "vertex_ai/gemini-2.5-flash": 20,
        "anthropic/claude-sonnet-4-5": 10,
        "bedrock/amazon.titan-embed-text-v2:0": 10,
        "bedrock/arn:aws:bedrock:us-east-1:123456789012:imported-model/k2x9q7": 2,
    },
    "dev": {
        "openai/gpt-4o": 20,
        "anthropic/claude-sonnet-4-5": 25,
        "vertex_ai/gemini-2.5-pro": 15,
        "anthropic/claude-haiku-4-5": 10,
        "ft:gpt-4o:org::abc": 5,
        "azure/gpt-4.1": 10,
        "openai/gpt-4o-mini": 10,
    },
    "support": {
        "ft:gpt-4o:org::abc": 60,
        "openai/gpt-4o-mini": 20,
        "anthropic/claude-haiku-4-5": 15,
        "azure/contoso-gpt4o-eu": 3,
    },
}

# Feature tags a client sends (index 0 = none), by profile.
_FEATURE_TAGS: Final = (
    "",
    "feature:summarise",
    "feature:rag",
    "feature:chat",
    "feature:classify",
    "feature:translate",
)
_FEATURE_WEIGHTS: Final[dict[str, tuple[float, ...]]] = {
    "assistant": (30, 15, 0, 45, 0, 10),
    "rag": (20, 5, 70, 5, 0, 0),
    "batch": (30, 30, 0, 0, 30, 10),
    "dev": (60, 10, 10, 10, 5, 5),
    "support": (20, 20, 10, 50, 0, 0),
}

# (short name, full User-Agent): LiteLLM tags every request with "User-Agent: <short>" and
# "User-Agent: <full>".
_USER_AGENTS: Final = (
    ("curl", "curl/7.88.1"),
    ("OpenAI", "OpenAI/Python 1.82.0"),
    ("python-requests", "python-requests/2.32.3"),
    ("Anthropic", "Anthropic/Python 0.52.0"),
    ("axios", "axios/1.7.9"),
)
_UA_BY_NAME: Final = {"curl": 0, "openai": 1, "requests": 2, "anthropic": 3, "axios": 4}
_REQUESTER_IPS: Final = ("10.1.2.3", "10.1.4.17", "10.2.0.45", "172.16.8.21", "192.168.10.7")

# Caller-supplied spend_logs_metadata, already in PostgreSQL's jsonb text form.
_SPEND_LOGS_METADATA: Final[dict[str, tuple[dict[str, Any], ...]]] = {
    "batch": tuple({"job": "nightly", "run": run} for run in range(1, 8))
    + tuple({"job": "backfill", "run": run} for run in range(1, 4)),
    "experiments": (
        {"variant": "a", "experiment": "onboarding-v2"},
        {"variant": "b", "experiment": "onboarding-v2"},
    ),
    "finance": ({"ticket": "FIN-1234", "project": "q4-forecast"},),
}

_TEAM_SPECS: Final = (
    # alias, in the organization?, cost center
    ("data-platform", True, "cc-4711"),
    ("search", True, "cc-4720"),
    ("support-bot", False, "cc-5100"),
    ("growth", False, "cc-6200"),
    ("finance-analytics", True, "cc-7300"),
    ("research", False, "cc-8800"),
)


@dataclass(frozen=True)
class _KeySpec:
    alias: str
    team: int | None
    user: str | None
    profile: str
    weight: float
    env: str
    user_agent: str
    spend_logs_metadata: str | None = None
    deleted: bool = False


_RESEARCH_USER: Final = "uuid:research"  # replaced by a seeded uuid
# fmt: off
_KEY_SPECS: Final = (
    # alias, team, user, profile, weight, key tag, client, spend_logs_metadata kind
    _KeySpec("search-api-prod", 1, None, "rag", 14, "env:prod", "openai"),
    _KeySpec("search-api-staging", 1, None, "rag", 2, "env:staging", "openai"),
    _KeySpec("support-bot-prod", 2, None, "support", 12, "env:prod", "openai"),
    _KeySpec("support-bot-eval", 2, "alice", "support", 1.5, "env:dev", "curl"),
    _KeySpec("data-etl-nightly", 0, "svc-etl", "batch", 9, "env:prod", "requests", "batch"),
    _KeySpec("data-notebooks", 0, "carol@example.com", "dev", 3, "env:dev", "openai"),
    _KeySpec("growth-experiments", 3, "dave@example.com", "assistant", 4, "env:prod", "openai",
             "experiments"),
    _KeySpec("growth-copywriter", 3, None, "assistant", 3, "env:prod", "anthropic"),
    _KeySpec("finance-reporting", 4, "erin@example.com", "batch", 2, "env:prod", "requests",
             "finance"),
    _KeySpec("research-sandbox", 5, _RESEARCH_USER, "dev", 3, "env:dev", "anthropic"),
    _KeySpec("research-batch", 5, None, "batch", 5, "env:prod", "requests", "batch"),
    _KeySpec("mobile-app-backend", None, None, "assistant", 8, "env:prod", "axios"),
    _KeySpec("internal-wiki-qa", None, "bob", "rag", 3, "env:prod", "requests"),
    _KeySpec("ci-integration-tests", None, None, "dev", 1, "env:ci", "curl"),
    _KeySpec("alice-dev", 0, "alice", "dev", 1.5, "env:dev", "curl"),
    _KeySpec("bob-dev", None, "bob", "dev", 1, "env:dev", "curl"),
    _KeySpec("marketing-copy", 3, None, "assistant", 2, "env:prod", "openai"),
    _KeySpec("legal-doc-review", 4, None, "assistant", 1.5, "env:prod", "anthropic"),
    # Deleted keys: in "LiteLLM_DeletedVerificationToken", still present in old spend logs.
    _KeySpec("legacy-chatbot-v1", 2, None, "support", 2, "env:prod", "openai", deleted=True),
    _KeySpec("old-etl-key", 0, "svc-etl", "batch", 1.5, "env:prod", "requests", "batch",
             deleted=True),
)
# fmt: on
_MASTER_KEY_WEIGHT: Final = 2.5


@dataclass(frozen=True)
class SyntheticTeam:
    """A row of "LiteLLM_TeamTable"."""

    team_id: str
    team_alias: str
    organization_id: str | None
    metadata: Mapping[str, Any]
    members: tuple[str, ...]
    created_at: datetime  # naive UTC, as LiteLLM stores it


@dataclass(frozen=True)
class SyntheticKey:
    """A virtual key: a row of "LiteLLM_VerificationToken" (or of the deleted-key table).

    The raw ``sk-...`` key is never kept; ``token`` is its SHA-256 hex, as LiteLLM stores it.
    """

    token: str
    key_name: str
    key_alias: str
    team_id: str | None
    user_id: str | None
    organization_id: str | None
    metadata: Mapping[str, Any]
    created_at: datetime  # naive UTC
    deleted: bool
    deleted_row_id: str | None  # "id" in "LiteLLM_DeletedVerificationToken"


@dataclass(frozen=True)
class LookupTables:
    """The keys and teams the generator's traffic uses, for LiteLLM's name-resolution tables."""

    keys: tuple[SyntheticKey, ...]
    teams: tuple[SyntheticTeam, ...]
    organization_id: str

    @property
    def live_keys(self) -> tuple[SyntheticKey, ...]:
        return tuple(k for k in self.keys if not k.deleted)

    @property
    def deleted_keys(self) -> tuple[SyntheticKey, ...]:
        return tuple(k for k in self.keys if k.deleted)

    def team(self, team_id: str) -> SyntheticTeam:
        return next(t for t in self.teams if t.team_id == team_id)


def _seeded_uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def generate_lookup_tables(seed: int = 0) -> LookupTables:
    """The ~20 keys (2 deleted) and 6 teams behind the synthetic traffic of ``seed``.

    Depends on the seed only, so every window written with one seed shares the same keys.
    """
    rng = np.random.default_rng(np.random.SeedSequence(entropy=_check_seed(seed), spawn_key=(1,)))
    organization_id = _seeded_uuid(rng)
    research_user = _seeded_uuid(rng)
    base = datetime(2025, 1, 6, 9, 0, 0)
    team_ids = [_seeded_uuid(rng) for _ in _TEAM_SPECS]
    keys: list[SyntheticKey] = []
    members: dict[int, list[str]] = {i: [] for i in range(len(_TEAM_SPECS))}
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    for spec in _KEY_SPECS:
        raw_key = "sk-" + "".join(alphabet[i] for i in rng.integers(0, 62, size=22))
        user = research_user if spec.user == _RESEARCH_USER else spec.user
        if spec.team is not None and user is not None and user not in members[spec.team]:
            members[spec.team].append(user)
        created = base + timedelta(
            days=int(rng.integers(0, 200)), seconds=int(rng.integers(0, 86_400))
        )
        keys.append(
            SyntheticKey(
                token=hashlib.sha256(raw_key.encode()).hexdigest(),
                key_name=f"sk-...{raw_key[-4:]}",
                key_alias=spec.alias,
                team_id=None if spec.team is None else team_ids[spec.team],
                user_id=user,
                organization_id=(
                    organization_id if spec.team is not None and _TEAM_SPECS[spec.team][1] else None
                ),
                metadata={"tags": [spec.env]},
                created_at=created - timedelta(days=300) if spec.deleted else created,
                deleted=spec.deleted,
                deleted_row_id=_seeded_uuid(rng) if spec.deleted else None,
            )
        )
    teams = tuple(
        SyntheticTeam(
            team_id=team_ids[i],
            team_alias=alias,
            organization_id=organization_id if in_org else None,
            metadata={"cost_center": cost_center},
            members=tuple(members[i]),
            created_at=base - timedelta(days=30 - i),
        )
        for i, (alias, in_org, cost_center) in enumerate(_TEAM_SPECS)
    )
    return LookupTables(keys=tuple(keys), teams=teams, organization_id=organization_id)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _check_seed(seed: int) -> int:
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return seed


def jsonb_text(value: Any) -> str:
    """``value`` as PostgreSQL prints it from ``jsonb``: keys by length then bytes, ', '/': '.

    The extract carries JSON text exactly as the PostgreSQL source reads it back, so the two
    sources yield identical tables.
    """
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode()))
        return "{" + ", ".join(f"{json.dumps(k)}: {jsonb_text(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return json.dumps(value)


_HEX_DIGITS: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_BASE62: Final = np.frombuffer(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8
)


def _strings_from_chars(chars: NDArray[np.uint8]) -> pa.Array:
    """One fixed-width ASCII string per row of ``chars``, without a Python loop."""
    rows, width = chars.shape
    if rows * width >= 2**31:
        raise ValueError("too many characters for one Arrow string array")
    offsets = np.arange(rows + 1, dtype=np.int32) * np.int32(width)
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    return pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes())]
    )


def _random_chars(
    rng: np.random.Generator, rows: int, width: int, alphabet: NDArray[np.uint8]
) -> pa.Array:
    return _strings_from_chars(
        alphabet[rng.integers(0, len(alphabet), size=(rows, width), dtype=np.uint8)]
    )


def _uuid4_strings(rng: np.random.Generator, rows: int) -> pa.Array:
    """Random version-4 UUIDs in canonical text form."""
    raw = rng.integers(0, 256, size=(rows, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    nibbles = np.empty((rows, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    digits = _HEX_DIGITS[nibbles]
    chars = np.full((rows, 36), ord("-"), dtype=np.uint8)
    for start, end, source in ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20)):
        chars[:, start:end] = digits[:, source : source + end - start]
    return _strings_from_chars(chars)


def _prefixed(
    rng: np.random.Generator,
    prefix: str,
    mask: NDArray[np.bool_],
    width: int,
    alphabet: NDArray[np.uint8],
) -> pa.Array:
    """``prefix`` + ``width`` random characters, one per row selected by ``mask``."""
    return _concat(prefix, _random_chars(rng, int(mask.sum()), width, alphabet))


def _repeat(value: str, count: int) -> pa.Array:
    return pc.take(pa.array([value]), np.zeros(count, dtype=np.int64))


def _scatter(parts: Sequence[tuple[NDArray[np.bool_], pa.Array]]) -> pa.Array:
    """Interleave per-subset arrays back into row order: the masks are disjoint and cover every
    row, and each array holds the values of its mask's rows in row order. Generating values only
    for the rows that need them keeps wide random ids cheap."""
    rows = len(parts[0][0])
    index = np.empty(rows, dtype=np.int64)
    offset = 0
    for mask, values in parts:
        positions = np.flatnonzero(mask)
        if len(positions) != len(values):
            raise ValueError("each part needs exactly one value per selected row")
        index[positions] = offset + np.arange(len(positions))
        offset += len(positions)
    if offset != rows:
        raise ValueError("the parts do not cover every row exactly once")
    return pc.take(pa.concat_arrays([values for _, values in parts]), index)


def _concat(*parts: pa.Array | str) -> pa.Array:
    """Element-wise string concatenation (a null part makes the row null)."""
    return pc.binary_join_element_wise(*parts, "")


def _json_string_or_null(values: pa.Array) -> pa.Array:
    """JSON for strings known to need no escaping: ``"value"``, or ``null`` for null."""
    return pc.if_else(pc.is_null(values), "null", _concat('"', values, '"'))


def _json_number(values: pa.Array) -> pa.Array:
    """JSON numbers; Arrow prints floats in shortest round-trip form, so no bits are lost."""
    return pc.if_else(pc.is_null(values), "null", pc.cast(values, pa.string()))


def _empty_to_null(values: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _take(
    values: Sequence[Any],
    indices: NDArray[np.integer[Any]] | pa.Array,
    type_: pa.DataType | None = None,
) -> pa.Array:
    return pc.take(pa.array(list(values), type=type_ or pa.string()), indices)


def _normalized(weights: Iterable[float]) -> NDArray[np.float64]:
    array = np.asarray(list(weights), dtype=np.float64)
    return array / array.sum()


# --------------------------------------------------------------------------------------------
# Row counts: the daily rhythm
# --------------------------------------------------------------------------------------------


def hour_factor(hour: datetime) -> float:
    """Traffic of ``hour`` relative to the daily mean: a cosine over the UTC day from
    ``RHYTHM_MIN_FACTOR`` (0.4) at 03:00 to ``RHYTHM_MAX_FACTOR`` (1.6) at 15:00; the 24 factors of
    a day average exactly 1."""
    amplitude = (RHYTHM_MAX_FACTOR - RHYTHM_MIN_FACTOR) / 2
    phase = 2 * math.pi * (floor_hour(hour).hour - _RHYTHM_TROUGH_HOUR) / 24
    return 1 - amplitude * math.cos(phase)


def hourly_row_count(hour: datetime, rows_per_hour: int) -> int:
    """Rows generated for ``hour``: ``rows_per_hour * hour_factor(hour)``, rounded half up, so
    between 0.4x and 1.6x ``rows_per_hour`` and ``rows_per_hour`` on average over a UTC day."""
    if rows_per_hour < 0:
        raise ValueError(f"rows_per_hour must not be negative, got {rows_per_hour}")
    return math.floor(rows_per_hour * hour_factor(hour) + 0.5)


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Per-seed lookup arrays the vectorized generator indexes into."""

    key_probabilities: NDArray[np.float64]
    model_cumulative: NDArray[np.float64]  # (keys, models)
    feature_cumulative: NDArray[np.float64]  # (keys, features)
    api_key: tuple[str, ...]
    key_alias: tuple[str | None, ...]
    team_id: tuple[str, ...]
    team_alias: tuple[str | None, ...]
    user: tuple[str, ...]
    organization_id: tuple[str, ...]
    key_tags: tuple[tuple[str, ...], ...]
    user_agent: NDArray[np.int64]
    requester_ip: tuple[str, ...]
    aliasless_rate: NDArray[np.float64]
    is_master: NDArray[np.bool_]
    slm_first: NDArray[np.int64]  # first option index of the key's spend_logs_metadata, -1 none
    slm_count: NDArray[np.int64]
    slm_options: tuple[str, ...]
    tag_combinations: tuple[str, ...]  # jsonb text, index (key * features + feature) * uas + ua


@functools.lru_cache(maxsize=16)
def _plan(seed: int) -> _Plan:
    lookup = generate_lookup_tables(seed)
    teams = lookup.teams
    model_names = [m.model for m in MODELS]
    profiles = [spec.profile for spec in _KEY_SPECS] + ["dev"]

    def model_weights(profile: str) -> NDArray[np.float64]:
        weights = np.array([_PROFILES[profile].get(name, 0.0) for name in model_names])
        weights = weights / weights.sum() * (1 - UNKNOWN_MODEL_SHARE)
        weights[_UNKNOWN_MODEL] = UNKNOWN_MODEL_SHARE
        return weights

    model_cumulative = np.stack([np.cumsum(model_weights(p)) for p in profiles])
    feature_cumulative = np.stack([np.cumsum(_normalized(_FEATURE_WEIGHTS[p])) for p in profiles])
    slm_options: list[str] = []
    slm_first: list[int] = []
    slm_count: list[int] = []
    for spec in [*_KEY_SPECS, None]:
        kind = spec.spend_logs_metadata if spec is not None else None
        if kind is None:
            slm_first.append(-1)
            slm_count.append(0)
            continue
        slm_first.append(len(slm_options))
        slm_count.append(len(_SPEND_LOGS_METADATA[kind]))
        slm_options.extend(jsonb_text(option) for option in _SPEND_LOGS_METADATA[kind])

    keys = lookup.keys
    key_tags = [tuple(k.metadata["tags"]) for k in keys] + [()]
    tag_combinations = [
        jsonb_text(
            ([feature] if feature else [])
            + list(tags)
            + [f"User-Agent: {short}", f"User-Agent: {full}"]
        )
        for tags in key_tags
        for feature in _FEATURE_TAGS
        for short, full in _USER_AGENTS
    ]
    team_alias = {t.team_id: t.team_alias for t in teams}
    return _Plan(
        key_probabilities=_normalized([s.weight for s in _KEY_SPECS] + [_MASTER_KEY_WEIGHT]),
        model_cumulative=model_cumulative,
        feature_cumulative=feature_cumulative,
        api_key=(*(k.token for k in keys), MASTER_KEY_API_KEY),
        key_alias=(*(k.key_alias for k in keys), None),
        team_id=(*(k.team_id or "" for k in keys), ""),
        team_alias=(*(team_alias.get(k.team_id or "") for k in keys), None),
        user=(*(k.user_id or "" for k in keys), MASTER_KEY_USER),
        organization_id=(*(k.organization_id or "" for k in keys), ""),
        key_tags=tuple(key_tags),
        user_agent=np.array([_UA_BY_NAME[s.user_agent] for s in _KEY_SPECS] + [0]),
        requester_ip=tuple(_REQUESTER_IPS[i % len(_REQUESTER_IPS)] for i in range(len(keys) + 1)),
        aliasless_rate=np.array(
            [ALIASLESS_RATE_DELETED_KEYS if s.deleted else ALIASLESS_RATE for s in _KEY_SPECS]
            + [0.0]
        ),
        is_master=np.array([False] * len(keys) + [True]),
        slm_first=np.array(slm_first),
        slm_count=np.array(slm_count),
        slm_options=tuple(slm_options),
        tag_combinations=tuple(tag_combinations),
    )


_MODEL_MODE: Final = np.array([m.mode for m in MODELS])
_MODEL_PROVIDER: Final = np.array([m.provider for m in MODELS])
_MODEL_PRICED: Final = np.array([m.priced for m in MODELS])
_MODEL_ID_STYLE: Final = np.array([m.id_style for m in MODELS])
_PRICE_INPUT: Final = np.array([m.input_cost or 0.0 for m in MODELS])
_PRICE_OUTPUT: Final = np.array([m.output_cost or 0.0 for m in MODELS])
_PRICE_CACHE_READ: Final = np.array([m.cache_read_cost or 0.0 for m in MODELS])
_PRICE_CACHE_CREATION: Final = np.array([m.cache_creation_cost or 0.0 for m in MODELS])
_MAX_INPUT: Final = np.array([max(m.max_input_tokens, 1) for m in MODELS])

# Request-id styles: LiteLLM's call uuid, OpenAI chat/Responses ids, Anthropic message ids,
# and the chatcmpl-<uuid> LiteLLM makes up for providers that return none.
_ID_CALL_ID, _ID_OPENAI, _ID_RESPONSES, _ID_ANTHROPIC, _ID_LITELLM = range(5)

# Error kinds of failed requests: weights for known models; the last one is for unknown models.
_ERROR_WEIGHTS: Final = (0.4, 0.3, 0.2, 0.1)
_ERROR_UNKNOWN_MODEL: Final = 4

_EXTRA_COLUMNS: Final = (
    "_completion_start",
    "_api_base",
    "_cache_key",
    "_requester_ip",
    "_user_agent",
    "_error_kind",
    "_model_index",
)


def _hour_rng(seed: int, hour: datetime) -> np.random.Generator:
    hour_index = int(floor_hour(hour).timestamp()) // 3600
    return np.random.default_rng(
        np.random.SeedSequence(entropy=_check_seed(seed), spawn_key=(2, hour_index))
    )


def _generate_hour(hour: datetime, rows: int, seed: int) -> pa.Table:
    """One hour of rows: ``EXTRACT_SCHEMA`` columns plus the ``_EXTRA_COLUMNS`` the writer needs,
    sorted by start time then request id."""
    plan = _plan(seed)
    rng = _hour_rng(seed, hour)
    n = rows
    hour_ms = int(floor_hour(hour).timestamp() * 1000)

    key = rng.choice(len(plan.key_probabilities), size=n, p=plan.key_probabilities)
    model = np.empty(n, dtype=np.int64)
    feature = np.empty(n, dtype=np.int64)
    u_model, u_feature = rng.random(n), rng.random(n)
    for k in range(len(plan.key_probabilities)):
        rows_of_key = key == k
        model[rows_of_key] = np.searchsorted(
            plan.model_cumulative[k], u_model[rows_of_key], "right"
        )
        feature[rows_of_key] = np.searchsorted(
            plan.feature_cumulative[k], u_feature[rows_of_key], "right"
        )
    model = np.minimum(model, len(MODELS) - 1)
    feature = np.minimum(feature, len(_FEATURE_TAGS) - 1)

    mode = _MODEL_MODE[model]
    provider = _MODEL_PROVIDER[model]
    is_unknown = mode == "unknown"
    is_embedding = mode == "embedding"
    is_chat = ~is_embedding
    failed = (rng.random(n) < FAILURE_RATE) | is_unknown
    success = ~failed
    anthropic = provider == "anthropic"

    # Tokens. Anthropic prompt tokens include cache reads and writes, as LiteLLM reports them.
    uncached = np.clip(rng.lognormal(math.log(900), 1.1, n), 5, _MAX_INPUT[model] * 0.5)
    uncached = uncached.astype(np.int64)
    completion = np.clip(rng.lognormal(math.log(180), 0.9, n), 1, 8000).astype(np.int64)
    embed_tokens = np.where(
        rng.random(n) < 0.2,
        rng.integers(1, 6, n),
        np.clip(rng.lognormal(math.log(300), 1.0, n), 1, 8191).astype(np.int64),
    )
    cache_hit_true = is_chat & success & ~is_unknown & (rng.random(n) < CACHE_HIT_RATE)
    with_cache = anthropic & success & ~cache_hit_true
    cache_read = np.where(
        with_cache & (rng.random(n) < 0.45),
        np.clip(rng.lognormal(math.log(3000), 0.8, n), 128, 150_000).astype(np.int64),
        0,
    )
    cache_creation = np.where(
        with_cache & (rng.random(n) < 0.15),
        np.clip(rng.lognormal(math.log(1500), 0.8, n), 128, 50_000).astype(np.int64),
        0,
    )
    prompt = np.where(is_embedding, embed_tokens, uncached + cache_read + cache_creation)
    prompt = np.where(is_unknown, 0, prompt)
    completion = np.where(is_embedding | failed, 0, completion)
    total = np.where(is_embedding & success, 0, prompt + completion)

    # Cost, as LiteLLM computes it from its price map: input (incl. cache) + output.
    priced = _MODEL_PRICED[model] & success & ~cache_hit_true
    cache_read_cost = cache_read * _PRICE_CACHE_READ[model]
    cache_creation_cost = cache_creation * _PRICE_CACHE_CREATION[model]
    input_cost = (prompt - cache_read - cache_creation) * _PRICE_INPUT[model]
    input_cost = input_cost + cache_read_cost + cache_creation_cost
    output_cost = completion * _PRICE_OUTPUT[model]
    spend = np.where(priced, input_cost + output_cost, 0.0)
    has_cache_costs = priced & anthropic & ((cache_read > 0) | (cache_creation > 0))

    # Times (ms): requests start anywhere in the hour; LiteLLM writes rows in ~10 s batches.
    start = hour_ms + rng.integers(0, 3_600_000, n)
    duration = np.where(
        is_embedding,
        np.clip(rng.lognormal(math.log(120), 0.5, n), 5, 10_000),
        np.clip(rng.lognormal(math.log(2500), 0.8, n), 50, 300_000),
    )
    duration = np.where(failed, np.clip(rng.lognormal(math.log(300), 1.0, n), 2, 60_000), duration)
    duration = duration.astype(np.int64)
    end = start + duration
    streaming = is_chat & success & (rng.random(n) < STREAMING_RATE)
    completion_start = np.where(
        streaming, start + (duration * rng.uniform(0.05, 0.5, n)).astype(np.int64), end
    )
    created = end + rng.integers(1_000, 12_000, n)

    # Call types and ids.
    openai_style = _MODEL_ID_STYLE[model] == "openai"
    responses_api = openai_style & (rng.random(n) < RESPONSES_API_RATE)
    call_type = np.where(
        is_embedding, "aembedding", np.where(responses_api, "aresponses", "acompletion")
    )
    style = np.select(
        [
            is_embedding | failed,
            responses_api,
            openai_style,
            _MODEL_ID_STYLE[model] == "anthropic",
        ],
        [_ID_CALL_ID, _ID_RESPONSES, _ID_OPENAI, _ID_ANTHROPIC],
        _ID_LITELLM,
    ).astype(np.int8)
    call_id = _uuid4_strings(rng, n)
    styled = [style == kind for kind in range(5)]
    request_id = _scatter(
        [
            (styled[_ID_CALL_ID], pc.filter(call_id, pa.array(styled[_ID_CALL_ID]))),
            (styled[_ID_OPENAI], _prefixed(rng, "chatcmpl-", styled[_ID_OPENAI], 29, _BASE62)),
            (
                styled[_ID_RESPONSES],
                _prefixed(rng, "resp_", styled[_ID_RESPONSES], 50, _HEX_DIGITS),
            ),
            (styled[_ID_ANTHROPIC], _prefixed(rng, "msg_01", styled[_ID_ANTHROPIC], 22, _BASE62)),
            (
                styled[_ID_LITELLM],
                _concat("chatcmpl-", _uuid4_strings(rng, int(styled[_ID_LITELLM].sum()))),
            ),
        ]
    )
    # LiteLLM suffixes cache hits with str(time.time()) so they never collide with the original.
    hits = int(cache_hit_true.sum())
    epoch = _concat(
        pc.cast(pa.array(end[cache_hit_true] // 1000), pa.string()),
        ".",
        pc.utf8_lpad(
            pc.cast(pa.array(rng.integers(0, 1_000_000, hits)), pa.string()), width=6, padding="0"
        ),
    )
    request_id = _scatter(
        [
            (
                cache_hit_true,
                _concat(pc.filter(request_id, pa.array(cache_hit_true)), "_cache_hit", epoch),
            ),
            (~cache_hit_true, pc.filter(request_id, pa.array(~cache_hit_true))),
        ]
    )
    cache_hit = np.where(
        failed,
        "False",
        np.where(cache_hit_true, "True", np.where(rng.random(n) < 0.8, "None", "False")),
    )
    cache_key = _scatter(
        [
            (cache_hit_true, _random_chars(rng, hits, 64, _HEX_DIGITS)),
            (~cache_hit_true, _repeat("Cache OFF", n - hits)),
        ]
    )

    # Who: key attributes; some rows lack the aliases in metadata.
    aliasless = rng.random(n) < plan.aliasless_rate[key]
    key_alias = pc.if_else(
        pa.array(aliasless), pa.scalar(None, pa.string()), _take(plan.key_alias, key)
    )
    team_alias = pc.if_else(
        pa.array(aliasless), pa.scalar(None, pa.string()), _take(plan.team_alias, key)
    )
    end_user = pc.if_else(
        pa.array(rng.random(n) < END_USER_RATE),
        _concat(
            "customer-",
            pc.utf8_lpad(
                pc.cast(pa.array(rng.integers(1, 41, n)), pa.string()), width=4, padding="0"
            ),
        ),
        "",
    )
    # LiteLLM makes a fresh uuid per request unless the client sends a session id.
    session_pool = pa.array([f"sess-{value:08x}" for value in rng.integers(0, 2**32, 20)])
    in_session = rng.random(n) < 0.1
    session_id = _scatter(
        [
            (in_session, pc.take(session_pool, rng.integers(0, 20, int(in_session.sum())))),
            (~in_session, _uuid4_strings(rng, n - int(in_session.sum()))),
        ]
    )
    user_agent = np.where(
        rng.random(n) < 0.8, plan.user_agent[key], rng.integers(0, len(_USER_AGENTS), n)
    )
    tag_index = (key * len(_FEATURE_TAGS) + feature) * len(_USER_AGENTS) + user_agent
    slm_pick = (plan.slm_first[key] >= 0) & (rng.random(n) < SPEND_LOGS_METADATA_RATE)
    slm_index = plan.slm_first[key] + (rng.random(n) * np.maximum(plan.slm_count[key], 1)).astype(
        np.int64
    )
    spend_logs_metadata = pc.take(
        pa.array(plan.slm_options or [""], type=pa.string()),
        pa.array(np.where(slm_pick, slm_index, 0), mask=~slm_pick),
    )
    error_kind = np.where(
        is_unknown,
        _ERROR_UNKNOWN_MODEL,
        rng.choice(len(_ERROR_WEIGHTS), size=n, p=_normalized(_ERROR_WEIGHTS)),
    )
    error_kind = np.where(failed, error_kind, -1)

    def ints(values: NDArray[np.int64], valid: NDArray[np.bool_] | None = None) -> pa.Array:
        return pa.array(values, type=pa.int64(), mask=None if valid is None else ~valid)

    def floats(values: NDArray[np.float64], valid: NDArray[np.bool_]) -> pa.Array:
        return pa.array(values, type=pa.float64(), mask=~valid)

    def times(values: NDArray[np.int64]) -> pa.Array:
        return pa.array(values, type=pa.timestamp("ms"))

    columns: dict[str, pa.Array] = {
        "request_id": request_id,
        "litellm_call_id": call_id,
        "call_type": pa.array(call_type, type=pa.string()),
        "status": pa.array(np.where(failed, "failure", "success"), type=pa.string()),
        "start_time": times(start),
        "end_time": times(end),
        "created_at": times(created),
        "request_duration_ms": ints(duration),
        "model": _take([m.model for m in MODELS], model),
        "model_id": _take([m.model_id for m in MODELS], model),
        "model_group": _take([m.model_group for m in MODELS], model),
        "custom_llm_provider": _take([m.provider for m in MODELS], model),
        "api_key": _take(plan.api_key, key),
        "key_alias": key_alias,
        "team_id": _take(plan.team_id, key),
        "team_alias": team_alias,
        "organization_id": _take(plan.organization_id, key),
        "user": _take(plan.user, key),
        "end_user": end_user,
        "session_id": session_id,
        "spend": pa.array(spend, type=pa.float64()),
        "prompt_tokens": ints(prompt),
        "completion_tokens": ints(completion),
        "total_tokens": ints(total),
        "cache_read_tokens": ints(cache_read),
        "cache_creation_tokens": ints(cache_creation),
        "input_cost": floats(input_cost, priced),
        "output_cost": floats(output_cost, priced),
        "cache_read_cost": floats(cache_read_cost, has_cache_costs),
        "cache_creation_cost": floats(cache_creation_cost, has_cache_costs),
        "cache_hit": pa.array(cache_hit, type=pa.string()),
        "request_tags": _take(plan.tag_combinations, tag_index),
        "spend_logs_metadata": spend_logs_metadata,
        "row_problems": pa.nulls(n, pa.string()),
        "_completion_start": times(completion_start),
        "_api_base": _take([m.api_base for m in MODELS], model),
        "_cache_key": cache_key,
        "_requester_ip": _take(plan.requester_ip, key),
        "_user_agent": _take([full for _, full in _USER_AGENTS], user_agent),
        "_error_kind": pa.array(error_kind, type=pa.int8()),
        "_model_index": pa.array(model, type=pa.int16()),
    }
    extract_fields = list(EXTRACT_SCHEMA)
    extra_fields = [pa.field(name, columns[name].type) for name in _EXTRA_COLUMNS]
    schema = pa.schema(extract_fields + extra_fields)
    table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    return table.sort_by([("start_time", "ascending"), ("request_id", "ascending")])


def _hour_tables(
    window: HourWindow, rows_per_hour: int, seed: int
) -> Iterator[tuple[datetime, pa.Table]]:
    for hour in window.hours():
        yield hour, _generate_hour(hour, hourly_row_count(hour, rows_per_hour), seed)


def iter_extract_hours(
    window: HourWindow, rows_per_hour: int, seed: int = 0
) -> Iterator[tuple[datetime, pa.Table]]:
    """``(hour, table in EXTRACT_SCHEMA)`` for each hour of ``window``: bounded memory for
    long windows, and the same rows as :func:`generate_extract`."""
    for hour, table in _hour_tables(window, rows_per_hour, seed):
        yield hour, table.select(EXTRACT_SCHEMA.names)


def generate_extract(window: HourWindow, rows_per_hour: int, seed: int = 0) -> pa.Table:
    """Synthetic spend logs of ``window`` in ``EXTRACT_SCHEMA``, ascending by ``start_time``.

    ``rows_per_hour`` is the mean over a UTC day; see :func:`hourly_row_count`. Values are what
    the PostgreSQL source reads back after :func:`write_to_postgres`: aliases as of request time
    (null where the metadata lacks them), ``''`` where LiteLLM stores ``''``, cache token counts 0
    where the usage has none, cost components null where LiteLLM records no cost breakdown
    (failures, cache hits, unpriced models).
    """
    tables = [table for _, table in iter_extract_hours(window, rows_per_hour, seed)]
    return pa.concat_tables(tables) if tables else EXTRACT_SCHEMA.empty_table()


# --------------------------------------------------------------------------------------------
# LiteLLM's stored shape: metadata JSON
# --------------------------------------------------------------------------------------------

_EXCEPTION_PREFIX: Final = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "bedrock": "Bedrock",
    "vertex_ai": "VertexAI",
    "azure": "Azure",
}
_TRACEBACK: Final = (
    '  File "/opt/litellm/venv/lib/python3.11/site-packages/litellm/main.py", line 765, in '
    "acompletion\n    raise exception_type(\n"
    '  File "/opt/litellm/venv/lib/python3.11/site-packages/litellm/litellm_core_utils/'
    'exception_mapping_utils.py", line 2547, in exception_type\n    _map_openai_exception(\n'
)


def _error_information(kind: int, model: SyntheticModel) -> dict[str, Any]:
    exception = _EXCEPTION_PREFIX.get(model.provider, "")
    suffix = (
        f"\n\nLiteLLM: model group '{model.model_group}' failed with the error above. "
        "No fallback was attempted."
    )
    code, error_class, normalized, message = {
        0: (
            "500",
            "InternalServerError",
            "500_PROVIDER_CONNECTION_ERROR",
            f"litellm.InternalServerError: InternalServerError: {exception}Exception - "
            f"Connection error.{suffix}",
        ),
        1: (
            "429",
            "RateLimitError",
            "429_RATE_LIMIT",
            f"litellm.RateLimitError: RateLimitError: {exception}Exception - Rate limit reached "
            f"for requests. Please try again later.{suffix}",
        ),
        2: (
            "400",
            "ContextWindowExceededError",
            "400_CONTEXT_WINDOW_EXCEEDED",
            f"litellm.ContextWindowExceededError: litellm.BadRequestError: {exception}Exception "
            f"- This model's maximum context length is {model.max_input_tokens} tokens.{suffix}",
        ),
        3: (
            "408",
            "Timeout",
            "408_TIMEOUT",
            f"litellm.Timeout: Timeout Error: {exception}Exception - Request timed out.{suffix}",
        ),
        4: (
            "400",
            "ProxyModelNotFoundError",
            "400_INVALID_REQUEST",
            "/chat/completions: Invalid model name passed in. Call `/v1/models` to view "
            "available models for your key.",
        ),
    }[kind]
    return {
        "traceback": "" if kind == _ERROR_UNKNOWN_MODEL else _TRACEBACK,
        "error_code": code,
        "error_class": error_class,
        "llm_provider": model.provider,
        "error_message": message,
        "normalized_error": normalized,
        "error_budget_limit": None,
        "error_budget_spend": None,
        "error_rate_limit_type": None,
        "error_budget_entity_id": None,
        "error_budget_entity_type": None,
        "error_provider_request_id": None,
        "error_rate_limit_category": None,
    }


_CHAT_PARAMS: Final = (
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "reasoning_effort",
)


# Every field of a price-map entry as LiteLLM 1.108 copies it into metadata.model_map_information
# (182 fields, most null: about 8 KB a row), for the full-size metadata shape. A word list
# keeps 182 names on 94 lines instead of 182.
_MODEL_MAP_FIELD_WORDS = """
    key rpm tpm mode max_tokens tiered_pricing cost_per_second supports_vision
    litellm_provider max_input_tokens off_peak_pricing max_output_tokens
    ocr_cost_per_page token_count_model output_vector_size supports_pdf_input
    supports_reasoning thinking_always_on uses_embed_content ocr_cost_per_credit
    supported_endpoints supports_image_size supports_web_search token_count_framing
    vertex_ai_audio_api input_cost_per_image input_cost_per_query input_cost_per_token
    search_free_requests supports_audio_input supports_tool_choice supports_tool_search
    supports_url_context supports_video_input input_cost_per_second
    output_cost_per_image output_cost_per_pixel output_cost_per_token
    supports_audio_output supports_computer_use token_count_tokenizer
    output_cost_per_second supports_box_questions citation_cost_per_token
    prompt_cache_min_tokens provider_specific_entry reasoning_effort_levels
    supported_audio_formats supported_openai_params supports_prompt_caching
    web_search_billing_unit annotation_cost_per_page default_reasoning_effort
    input_cost_per_character supports_legacy_thinking supports_response_schema
    supports_system_messages input_cost_per_token_flex ocr_cost_per_page_batches
    output_cost_per_character output_cost_per_second_2k output_cost_per_second_4k
    supports_function_calling supports_native_streaming supports_per_turn_control
    supports_regex_lookaround input_cost_per_audio_token input_cost_per_image_token
    input_cost_per_video_token output_cost_per_token_flex supports_adaptive_thinking
    supports_assistant_prefill cache_read_input_token_cost input_cost_per_text_message
    output_cost_per_audio_token output_cost_per_image_token output_cost_per_second_480p
    output_cost_per_second_720p output_cost_per_second_768p output_cost_per_video_token
    input_cost_per_token_batches output_cost_per_second_1080p
    input_cost_per_token_balanced input_cost_per_token_priority
    output_cost_per_token_batches search_context_cost_per_query
    supports_anthropic_compaction supports_low_reasoning_effort
    supports_max_reasoning_effort input_cost_per_token_ultrafast
    output_cost_per_token_balanced output_cost_per_token_priority
    supports_embedding_image_input supports_none_reasoning_effort
    cache_creation_input_token_cost input_cost_per_audio_per_second
    input_cost_per_audio_token_flex input_cost_per_video_per_second
    output_cost_per_reasoning_token output_cost_per_token_ultrafast
    supports_xhigh_reasoning_effort annotation_cost_per_page_batches
    cache_read_input_token_cost_flex output_cost_per_video_per_second
    supports_mid_conversation_system supports_prompt_cache_breakpoint
    cache_read_input_audio_token_cost supports_minimal_reasoning_effort
    supports_native_structured_output input_cost_per_audio_token_batches
    input_cost_per_image_token_batches input_cost_per_video_token_batches
    supports_parallel_function_calling cache_read_input_token_cost_batches
    input_cost_per_audio_token_priority output_cost_per_image_token_batches
    regional_endpoint_uplift_multiplier supports_anthropic_thinking_payload
    bedrock_output_config_effort_ceiling cache_creation_input_token_cost_flex
    cache_read_input_token_cost_balanced cache_read_input_token_cost_priority
    google_maps_grounding_cost_per_query output_cost_per_image_token_priority
    output_cost_per_reasoning_token_flex supports_thinking_cache_preservation
    cache_read_input_token_cost_ultrafast bedrock_converse_supports_strict_tools
    cache_read_input_audio_token_cost_flex input_cost_per_token_above_128k_tokens
    input_cost_per_token_above_200k_tokens input_cost_per_token_above_272k_tokens
    input_cost_per_token_above_512k_tokens cache_creation_input_token_cost_batches
    output_cost_per_token_above_128k_tokens output_cost_per_token_above_200k_tokens
    output_cost_per_token_above_272k_tokens output_cost_per_token_above_512k_tokens
    cache_creation_input_token_cost_priority output_cost_per_reasoning_token_priority
    regional_processing_uplift_multiplier_eu regional_processing_uplift_multiplier_us
    cache_creation_input_token_cost_above_1hr cache_creation_input_token_cost_ultrafast
    cache_read_input_audio_token_cost_batches supports_bedrock_native_structured_output
    cache_read_input_audio_token_cost_priority
    input_cost_per_token_above_200k_tokens_flex
    input_cost_per_token_above_272k_tokens_flex
    output_cost_per_character_above_128k_tokens
    input_cost_per_audio_token_above_200k_tokens
    output_cost_per_token_above_200k_tokens_flex
    output_cost_per_token_above_272k_tokens_flex
    cache_read_input_token_cost_above_200k_tokens
    cache_read_input_token_cost_above_272k_tokens
    cache_read_input_token_cost_above_512k_tokens
    input_cost_per_token_above_200k_tokens_batches
    input_cost_per_token_above_272k_tokens_batches
    input_cost_per_token_above_200k_tokens_priority
    input_cost_per_token_above_272k_tokens_priority
    output_cost_per_token_above_200k_tokens_batches
    output_cost_per_token_above_272k_tokens_batches
    input_cost_per_token_above_272k_tokens_ultrafast
    output_cost_per_token_above_200k_tokens_priority
    output_cost_per_token_above_272k_tokens_priority
    cache_creation_input_token_cost_above_200k_tokens
    cache_creation_input_token_cost_above_272k_tokens
    input_cost_per_audio_token_above_200k_tokens_flex
    output_cost_per_token_above_272k_tokens_ultrafast
    cache_read_input_token_cost_above_272k_tokens_flex
    input_cost_per_audio_token_above_200k_tokens_batches
    cache_read_input_token_cost_above_200k_tokens_batches
    cache_read_input_token_cost_above_272k_tokens_batches
    input_cost_per_audio_token_above_200k_tokens_priority
    cache_creation_input_token_cost_above_272k_tokens_flex
    cache_read_input_token_cost_above_200k_tokens_priority
    cache_read_input_token_cost_above_272k_tokens_priority
    cache_read_input_token_cost_above_272k_tokens_ultrafast
    cache_creation_input_token_cost_above_200k_tokens_batches
    cache_creation_input_token_cost_above_272k_tokens_batches
    cache_creation_input_token_cost_above_272k_tokens_priority
    cache_creation_input_token_cost_above_272k_tokens_ultrafast
"""
_MODEL_MAP_FIELDS_1_108: Final[tuple[str, ...]] = tuple(_MODEL_MAP_FIELD_WORDS.split())


def _model_map_information(
    model: SyntheticModel, padding_bytes: int, full_model_map: bool = False
) -> str:
    """``metadata.model_map_information``: the price-map entry LiteLLM copies into every row
    (~65% of a real row). ``padding_bytes`` adds null price-map fields so a row carries about
    that many more bytes of metadata; ``full_model_map`` writes every field LiteLLM 1.108 writes
    (null where the model has no value), as real rows carry them."""
    if not model.priced:
        value: dict[str, Any] | None = None
    else:
        chat = model.mode == "chat"
        value = {
            "key": model.model.split("/", 1)[-1],
            "rpm": None,
            "tpm": None,
            "mode": model.mode,
            "max_tokens": model.max_output_tokens or model.max_input_tokens,
            "litellm_provider": model.provider,
            "max_input_tokens": model.max_input_tokens,
            "max_output_tokens": model.max_output_tokens,
            "input_cost_per_token": model.input_cost,
            "output_cost_per_token": model.output_cost,
            "cache_read_input_token_cost": model.cache_read_cost,
            "cache_creation_input_token_cost": model.cache_creation_cost,
            "output_vector_size": None if chat else 1024,
            "supports_vision": chat,
            "supports_pdf_input": chat and model.provider in ("anthropic", "vertex_ai"),
            "supports_tool_choice": chat,
            "supports_function_calling": chat,
            "supports_prompt_caching": model.cache_read_cost is not None,
            "supports_response_schema": chat,
            "supports_system_messages": chat,
            "supported_openai_params": list(_CHAT_PARAMS) if chat else ["dimensions", "user"],
        }
    if full_model_map:
        value = {**dict.fromkeys(_MODEL_MAP_FIELDS_1_108), **(value or {})}
    entry: dict[str, Any] = {"model_map_key": model.model, "model_map_value": value}
    text = json.dumps(entry)
    if padding_bytes > 0:
        target = len(text) + padding_bytes
        padded = dict(value or {})
        step = 0
        while True:
            step += 1
            padded[f"input_cost_per_token_above_{step * 8}k_tokens"] = None
            entry["model_map_value"] = padded
            text = json.dumps(entry)
            if len(text) >= target:
                break
    return text


# The keys of LiteLLM 1.108's SpendLogsMetadata that the generator leaves at their usual values.
_CONSTANT_METADATA: Final[dict[str, Any]] = {
    "max_retries": 0,
    "batch_models": None,
    "actor_agent_id": None,
    "azure_spillover": None,
    "router_metadata": None,
    "target_agent_id": None,
    "billing_agent_id": None,
    "eval_information": None,
    "routing_decision": None,
    "attempted_retries": 0,
    "applied_guardrails": [],
    "autorouter_savings": None,
    "attempted_fallbacks": 0,
    "compression_savings": None,
    "agent_execution_mode": None,
    "billed_retry_attempt": False,
    "internal_call_origin": None,
    "proxy_server_request": None,
    "batch_failed_requests": None,
    "guardrail_information": None,
    "litellm_roi_estimator": False,
    "mcp_tool_call_metadata": None,
    "verified_human_user_id": None,
    "cold_storage_object_key": None,
    "used_client_oauth_token": False,
    "user_api_key_project_id": None,
    "litellm_overhead_time_ms": None,
    "batch_successful_requests": None,
    "user_api_key_project_alias": None,
    "autorouter_savings_estimate": None,
    "vector_store_request_metadata": None,
    "litellm_gateway_injected_cache": None,
    "autorouter_baseline_observation": None,
}


@functools.lru_cache(maxsize=8)
def _model_map_texts(padding_bytes: int, full_model_map: bool) -> pa.Array:
    return pa.array([_model_map_information(m, padding_bytes, full_model_map) for m in MODELS])


@functools.lru_cache(maxsize=1)
def _error_texts() -> pa.Array:
    """``error_information`` JSON for every (kind, model): index ``kind * len(MODELS) + model``."""
    return pa.array(
        [
            json.dumps(_error_information(kind, model))
            for kind in range(len(_ERROR_WEIGHTS) + 1)
            for model in MODELS
        ]
    )


def _json_object(fields: Sequence[tuple[str, pa.Array | str]]) -> pa.Array:
    """One JSON object per row from ``(key, value as JSON text)`` pairs (arrays or constants)."""
    parts: list[pa.Array | str] = []
    for position, (name, value) in enumerate(fields):
        parts += [("{" if position == 0 else ", ") + json.dumps(name) + ": ", value]
    return _concat(*parts, "}") if parts else _repeat("{}", 0)


def _metadata_json(table: pa.Table, padding_bytes: int, full_model_map: bool = False) -> pa.Array:
    """The ``metadata`` jsonb text of every row, built column-wise (no per-row Python)."""
    failed = pc.equal(table["status"], "failure")
    # Anthropic usage always carries the cache counters (0 when unused); other providers' not.
    has_cache = pc.and_(pc.equal(table["custom_llm_provider"], "anthropic"), pc.invert(failed))
    cache_read = _json_number(table["cache_read_tokens"])
    cache_creation = _json_number(table["cache_creation_tokens"])
    cache_details = _json_object(
        [
            ("cached_tokens", cache_read),
            ("cache_write_tokens", cache_creation),
            ("cache_creation_tokens", cache_creation),
        ]
    )
    details: list[tuple[str, pa.Array | str]] = [
        ("prompt_tokens_details", pc.if_else(has_cache, cache_details, "null")),
        ("completion_tokens_details", "null"),
    ]
    with_cache = [
        *details,
        ("cache_read_input_tokens", cache_read),
        ("cache_creation_input_tokens", cache_creation),
    ]
    totals: list[tuple[str, pa.Array | str]] = [
        ("total_tokens", _json_number(table["total_tokens"])),
        ("prompt_tokens", _json_number(table["prompt_tokens"])),
        ("completion_tokens", _json_number(table["completion_tokens"])),
    ]
    usage = pc.if_else(
        failed,
        "{}",
        pc.if_else(has_cache, _json_object(totals + with_cache), _json_object(totals + details)),
    )
    additional_usage = pc.if_else(
        failed, "{}", pc.if_else(has_cache, _json_object(with_cache), _json_object(details))
    )
    spend = _json_number(table["spend"])
    costs: list[tuple[str, pa.Array | str]] = [
        ("input_cost", _json_number(table["input_cost"])),
        ("total_cost", spend),
        ("output_cost", _json_number(table["output_cost"])),
        ("service_tier", "null"),
        ("original_cost", spend),
        ("data_residency", "null"),
        ("margin_percent", "0.0"),
        ("discount_amount", "0.0"),
        ("tool_usage_cost", "0.0"),
        ("vertex_location", "null"),
        ("discount_percent", "0.0"),
        ("margin_fixed_amount", "0.0"),
        ("margin_total_amount", "0.0"),
    ]
    cache_costs: list[tuple[str, pa.Array | str]] = [
        ("cache_read_cost", _json_number(table["cache_read_cost"])),
        ("cache_creation_cost", _json_number(table["cache_creation_cost"])),
    ]
    cost_breakdown = pc.if_else(
        pc.is_valid(table["input_cost"]),
        pc.if_else(
            pc.is_valid(table["cache_read_cost"]),
            _json_object(costs + cache_costs),
            _json_object(costs),
        ),
        "null",
    )
    model_index = pc.cast(table["_model_index"], pa.int64())
    error_kind = pc.max_element_wise(pc.cast(table["_error_kind"], pa.int64()), 0)
    error_index = pc.add(pc.multiply(error_kind, len(MODELS)), model_index)
    master = pc.equal(table["api_key"], MASTER_KEY_API_KEY)
    user_id = pc.if_else(master, MASTER_KEY_USER, _empty_to_null(table["user"]))
    return _json_object(
        [
            ("status", pc.if_else(failed, '"failure"', "null")),
            ("user_agent", _json_string_or_null(table["_user_agent"])),
            ("usage_object", usage),
            ("user_api_key", _json_string_or_null(table["api_key"])),
            ("cost_breakdown", cost_breakdown),
            ("litellm_call_id", _json_string_or_null(table["litellm_call_id"])),
            ("error_information", pc.if_else(failed, pc.take(_error_texts(), error_index), "null")),
            ("user_api_key_alias", _json_string_or_null(table["key_alias"])),
            ("spend_logs_metadata", pc.fill_null(table["spend_logs_metadata"], "null")),
            ("user_api_key_org_id", _json_string_or_null(_empty_to_null(table["organization_id"]))),
            ("original_model_group", _json_string_or_null(_empty_to_null(table["model_group"]))),
            ("requester_ip_address", _json_string_or_null(table["_requester_ip"])),
            ("user_api_key_team_id", _json_string_or_null(_empty_to_null(table["team_id"]))),
            ("user_api_key_user_id", _json_string_or_null(user_id)),
            ("additional_usage_values", additional_usage),
            ("user_api_key_team_alias", _json_string_or_null(table["team_alias"])),
            (
                "model_map_information",
                pc.take(_model_map_texts(padding_bytes, full_model_map), model_index),
            ),
            *((name, json.dumps(value)) for name, value in _CONSTANT_METADATA.items()),
        ]
    )


def _spend_logs_rows(
    table: pa.Table, *, metadata_padding_bytes: int = 0, full_model_map: bool = False
) -> pa.Table:
    """Rows of an hour table as "LiteLLM_SpendLogs" stores them, under its real column names.

    Columns LiteLLM leaves at their defaults (``messages``/``response``/``proxy_server_request``
    ``'{}'``, NULL ``agent_id`` ...) are omitted so the table's defaults apply.
    """
    return pa.table(
        {
            "request_id": table["request_id"],
            "call_type": table["call_type"],
            "api_key": table["api_key"],
            "spend": table["spend"],
            "total_tokens": table["total_tokens"],
            "prompt_tokens": table["prompt_tokens"],
            "completion_tokens": table["completion_tokens"],
            "startTime": table["start_time"],
            "endTime": table["end_time"],
            "completionStartTime": table["_completion_start"],
            "model": table["model"],
            "model_id": table["model_id"],
            "model_group": table["model_group"],
            "custom_llm_provider": table["custom_llm_provider"],
            "api_base": table["_api_base"],
            "user": table["user"],
            "metadata": _metadata_json(table, metadata_padding_bytes, full_model_map),
            "cache_hit": table["cache_hit"],
            "cache_key": table["_cache_key"],
            "request_tags": table["request_tags"],
            "team_id": table["team_id"],
            "end_user": table["end_user"],
            "requester_ip_address": table["_requester_ip"],
            "session_id": table["session_id"],
            "status": table["status"],
            "organization_id": table["organization_id"],
            "request_duration_ms": table["request_duration_ms"],
            "created_at": table["created_at"],
            "updated_at": table["created_at"],
            "litellm_call_id": table["litellm_call_id"],
        }
    )


# --------------------------------------------------------------------------------------------
# Writing to PostgreSQL
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_to_postgres` inserted (rows already present are skipped, not counted)."""

    rows_written: int
    rows_skipped: int
    total_spend: float  # math.fsum of "spend" over the rows written
    hours: int


_DAILY_GROUP: Final = ("date", "user", "api_key", "model", "custom_llm_provider", "endpoint")
_DAILY_SUMS: Final = (
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "spend",
    "api_requests",
    "successful_requests",
    "failed_requests",
)
_ENDPOINTS: Final = {
    "acompletion": "/chat/completions",
    "aresponses": "/responses",
    "aembedding": "/embeddings",
}


def _daily_deltas(table: pa.Table) -> list[dict[str, Any]]:
    """LiteLLM's per-request daily increments, summed per unique key of "LiteLLM_DailyUserSpend"."""
    endpoint = pa.array(list(_ENDPOINTS.values()))
    endpoint_index = pc.index_in(table["call_type"], value_set=pa.array(list(_ENDPOINTS)))
    success = pc.cast(pc.equal(table["status"], "success"), pa.int64())
    rows = pa.table(
        {
            "date": pc.strftime(table["start_time"], format="%Y-%m-%d"),
            "user": table["user"],
            "api_key": table["api_key"],
            "model": table["model"],
            "custom_llm_provider": table["custom_llm_provider"],
            "endpoint": pc.take(endpoint, endpoint_index),
            "model_group": table["model_group"],
            "prompt_tokens": table["prompt_tokens"],
            "completion_tokens": table["completion_tokens"],
            "cache_read_input_tokens": table["cache_read_tokens"],
            "cache_creation_input_tokens": table["cache_creation_tokens"],
            "spend": table["spend"],
            "api_requests": pa.array(np.ones(len(table), dtype=np.int64)),
            "successful_requests": success,
            "failed_requests": pc.subtract(1, success),
        }
    )
    grouped = rows.group_by(list(_DAILY_GROUP), use_threads=False).aggregate(
        [(name, "sum") for name in _DAILY_SUMS] + [("model_group", "min")]
    )
    return [
        {
            **{name: row[name] for name in _DAILY_GROUP},
            **{name: row[f"{name}_sum"] for name in _DAILY_SUMS},
            "model_group": row["model_group_min"],
        }
        for row in grouped.to_pylist()
    ]


def _merge_daily(
    total: dict[tuple[Any, ...], dict[str, Any]], deltas: list[dict[str, Any]]
) -> None:
    for delta in deltas:
        group = tuple(delta[name] for name in _DAILY_GROUP)
        current = total.get(group)
        if current is None:
            total[group] = dict(delta)
        else:
            for name in _DAILY_SUMS:
                current[name] += delta[name]


_DAILY_MATCH: Final = (
    "d.user_id IS NOT DISTINCT FROM x.user_id AND d.date = x.date AND d.api_key = x.api_key "
    "AND d.model IS NOT DISTINCT FROM x.model "
    "AND d.custom_llm_provider IS NOT DISTINCT FROM x.custom_llm_provider "
    "AND d.mcp_namespaced_tool_name IS NULL AND d.endpoint IS NOT DISTINCT FROM x.endpoint"
)


def _upsert_daily(cursor: Any, total: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    """Increment "LiteLLM_DailyUserSpend" like LiteLLM's batch writer (set-based: the unique key
    holds a NULL ``mcp_namespaced_tool_name``, which ``ON CONFLICT`` cannot match)."""
    from psycopg2.extras import execute_values

    if not total:
        return
    cursor.execute("DROP TABLE IF EXISTS _cz_daily_delta")
    cursor.execute(
        "CREATE TEMP TABLE _cz_daily_delta (user_id text, date text, api_key text, model text, "
        "model_group text, custom_llm_provider text, endpoint text, prompt_tokens bigint, "
        "completion_tokens bigint, cache_read_input_tokens bigint, "
        "cache_creation_input_tokens bigint, spend double precision, api_requests bigint, "
        "successful_requests bigint, failed_requests bigint) ON COMMIT DROP"
    )
    execute_values(
        cursor,
        "INSERT INTO _cz_daily_delta VALUES %s",
        [
            (
                d["user"],
                d["date"],
                d["api_key"],
                d["model"],
                d["model_group"],
                d["custom_llm_provider"],
                d["endpoint"],
                *(d[name] for name in _DAILY_SUMS),
            )
            for d in total.values()
        ],
    )
    table = litellm_tables.DAILY_USER_SPEND
    increments = ", ".join(f"{name} = d.{name} + x.{name}" for name in _DAILY_SUMS)
    cursor.execute(
        f'UPDATE "{table}" AS d SET {increments}, updated_at = CURRENT_TIMESTAMP '
        f"FROM _cz_daily_delta AS x WHERE {_DAILY_MATCH}"
    )
    columns = (
        "user_id",
        "date",
        "api_key",
        "model",
        "model_group",
        "custom_llm_provider",
        "endpoint",
        *_DAILY_SUMS,
    )
    cursor.execute(
        f'INSERT INTO "{table}" (id, {", ".join(columns)}, created_at, updated_at) '
        f"SELECT gen_random_uuid()::text, {', '.join('x.' + c for c in columns)}, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM _cz_daily_delta AS x "
        f'WHERE NOT EXISTS (SELECT 1 FROM "{table}" AS d WHERE {_DAILY_MATCH})'
    )
    cursor.execute("DROP TABLE _cz_daily_delta")


def _write_lookup_tables(cursor: Any, lookup: LookupTables) -> None:
    """Keys, deleted keys and teams; rows already present are left alone."""
    cursor.executemany(
        f'INSERT INTO "{litellm_tables.TEAM_TABLE}" (team_id, team_alias, organization_id, '
        "admins, members, metadata, models, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s) ON CONFLICT (team_id) DO NOTHING",
        [
            (
                t.team_id,
                t.team_alias,
                t.organization_id,
                [],
                list(t.members),
                json.dumps(t.metadata),
                [],
                t.created_at,
                t.created_at,
            )
            for t in lookup.teams
        ],
    )
    key_columns = (
        "token, key_name, key_alias, models, user_id, team_id, organization_id, "
        "metadata, created_at, created_by, updated_at, updated_by"
    )
    cursor.executemany(
        f'INSERT INTO "{litellm_tables.VERIFICATION_TOKEN}" ({key_columns}) '
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s) "
        "ON CONFLICT (token) DO NOTHING",
        [
            (
                k.token,
                k.key_name,
                k.key_alias,
                [],
                k.user_id,
                k.team_id,
                k.organization_id,
                json.dumps(k.metadata),
                k.created_at,
                MASTER_KEY_USER,
                k.created_at,
                MASTER_KEY_USER,
            )
            for k in lookup.live_keys
        ],
    )
    cursor.executemany(
        f'INSERT INTO "{litellm_tables.DELETED_VERIFICATION_TOKEN}" (id, {key_columns}, '
        "deleted_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        [
            (
                k.deleted_row_id,
                k.token,
                k.key_name,
                k.key_alias,
                [],
                k.user_id,
                k.team_id,
                k.organization_id,
                json.dumps(k.metadata),
                k.created_at,
                MASTER_KEY_USER,
                k.created_at,
                MASTER_KEY_USER,
                MASTER_KEY_USER,
            )
            for k in lookup.deleted_keys
        ],
    )


def _chunk_rows(metadata_padding_bytes: int) -> int:
    estimated_row_bytes = 3_000 + max(metadata_padding_bytes, 0)
    return max(_MIN_CHUNK_ROWS, min(_MAX_CHUNK_ROWS, _CHUNK_BYTES // estimated_row_bytes))


def write_to_postgres(
    database_url: str,
    window: HourWindow,
    rows_per_hour: int,
    seed: int = 0,
    *,
    metadata_padding_bytes: int = 0,
    full_model_map: bool = False,
    legacy: bool = False,
) -> WriteSummary:
    """Write :func:`generate_extract`'s rows into LiteLLM's tables at ``database_url``.

    Creates the tables where absent (``legacy`` only matters then: it creates an older
    "LiteLLM_SpendLogs" without the newer columns; an existing table is written with the columns
    it has). Spend logs go in with ``COPY`` in chunks of at most 20,000 rows, one hour generated at
    a time, so memory stays bounded for millions of rows. Rows whose ``request_id`` is already
    present are skipped, so overlapping windows can be written again; only rows actually inserted
    are added to "LiteLLM_DailyUserSpend" and to the key and team ``spend`` counters. Everything
    happens in one transaction.
    """
    import psycopg2

    _check_seed(seed)
    if metadata_padding_bytes < 0:
        raise ValueError("metadata_padding_bytes must not be negative")
    lookup = generate_lookup_tables(seed)
    written = skipped = 0
    spends: list[NDArray[np.float64]] = []  # every written spend, for an exactly rounded total
    daily: dict[tuple[Any, ...], dict[str, Any]] = {}
    key_spend: dict[str, float] = {}
    chunk_rows = _chunk_rows(metadata_padding_bytes)
    connection = psycopg2.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            litellm_tables.create_litellm_tables(cursor, legacy=legacy)
            _write_lookup_tables(cursor, lookup)
            columns = set(litellm_tables.existing_columns(cursor, litellm_tables.SPEND_LOGS))
            for hour, hour_table in _hour_tables(window, rows_per_hour, seed):
                check_existing = _hour_has_rows(cursor, hour)
                for offset in range(0, len(hour_table), chunk_rows):
                    chunk = hour_table.slice(offset, chunk_rows)
                    if check_existing:
                        generated = len(chunk)
                        chunk = _without_present_rows(cursor, chunk)
                        skipped += generated - len(chunk)
                    if len(chunk) == 0:
                        continue
                    _copy_spend_logs(cursor, chunk, columns, metadata_padding_bytes, full_model_map)
                    written += len(chunk)
                    spends.append(chunk["spend"].to_numpy())
                    _merge_daily(daily, _daily_deltas(chunk))
                    for row in chunk.group_by("api_key").aggregate([("spend", "sum")]).to_pylist():
                        key_spend[row["api_key"]] = (
                            key_spend.get(row["api_key"], 0.0) + row["spend_sum"]
                        )
            _upsert_daily(cursor, daily)
            _add_key_and_team_spend(cursor, lookup, key_spend)
    finally:
        connection.close()
    return WriteSummary(
        rows_written=written,
        rows_skipped=skipped,
        total_spend=math.fsum(np.concatenate(spends)) if spends else 0.0,
        hours=sum(1 for _ in window.hours()),
    )


def _hour_has_rows(cursor: Any, hour: datetime) -> bool:
    """Whether the hour holds any row yet: if not, its rows cannot collide (ids are per hour)."""
    start = floor_hour(hour).replace(tzinfo=None)
    cursor.execute(
        f'SELECT EXISTS (SELECT 1 FROM "{litellm_tables.SPEND_LOGS}" '
        'WHERE "startTime" >= %s AND "startTime" < %s)',
        (start, start + HOUR),
    )
    return bool(cursor.fetchone()[0])


def _without_present_rows(cursor: Any, chunk: pa.Table) -> pa.Table:
    """``chunk`` minus the rows whose ``request_id`` the table already holds (LiteLLM's own
    inserts skip duplicates too)."""
    cursor.execute(
        f'SELECT request_id FROM "{litellm_tables.SPEND_LOGS}" WHERE request_id = ANY(%s)',
        (chunk["request_id"].to_pylist(),),
    )
    present = [row[0] for row in cursor.fetchall()]
    if not present:
        return chunk
    return chunk.filter(pc.invert(pc.is_in(chunk["request_id"], value_set=pa.array(present))))


def _copy_spend_logs(
    cursor: Any, chunk: pa.Table, columns: set[str], padding: int, full_model_map: bool
) -> None:
    rows = _spend_logs_rows(chunk, metadata_padding_bytes=padding, full_model_map=full_model_map)
    rows = rows.select([name for name in rows.column_names if name in columns])
    buffer = io.BytesIO()
    # Strings are always quoted and NULLs are bare empty fields: COPY's CSV keeps '' and NULL apart.
    pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    cursor.copy_expert(
        f'COPY "{litellm_tables.SPEND_LOGS}" ({litellm_tables.quote_columns(rows.column_names)}) '
        "FROM STDIN WITH (FORMAT csv)",
        buffer,
    )


def _add_key_and_team_spend(cursor: Any, lookup: LookupTables, key_spend: dict[str, float]) -> None:
    """LiteLLM also keeps running ``spend`` totals on live keys and teams."""
    team_spend: dict[str, float] = {}
    for key in lookup.live_keys:
        amount = key_spend.get(key.token, 0.0)
        if key.team_id is not None and amount:
            team_spend[key.team_id] = team_spend.get(key.team_id, 0.0) + amount
    cursor.executemany(
        f'UPDATE "{litellm_tables.VERIFICATION_TOKEN}" SET spend = spend + %s WHERE token = %s',
        [(key_spend[k.token], k.token) for k in lookup.live_keys if key_spend.get(k.token)],
    )
    cursor.executemany(
        f'UPDATE "{litellm_tables.TEAM_TABLE}" SET spend = spend + %s WHERE team_id = %s',
        [(amount, team_id) for team_id, amount in team_spend.items()],
    )


__all__ = [
    "MASTER_KEY_API_KEY",
    "MASTER_KEY_USER",
    "MODELS",
    "UNPRICED_MODELS",
    "LookupTables",
    "SyntheticKey",
    "SyntheticModel",
    "SyntheticTeam",
    "WriteSummary",
    "generate_extract",
    "generate_lookup_tables",
    "hour_factor",
    "hourly_row_count",
    "iter_extract_hours",
    "jsonb_text",
    "write_to_postgres",
]
