"""Lake rows -> CloudZero Common Bill Format (CBF) line items, vectorized and exact.

One line item per (UTC hour of ``start_time``, grain combination). Every output column is a
string exactly as it goes on the wire (see ``cloudzero_api.md`` §3.3/§4), so the uploader only
serialises. Decisions, each tied to the contract:

* ``cost/cost`` is the exact decimal sum of ``spend``. Each float64 goes through its shortest
  round-trip repr into exact decimals by the one money rule of :mod:`cz_pipeline.lib.money`
  (the checks use the same) and is summed there, never in float; the result is printed as a
  plain decimal (``^\\d+(\\.\\d+)?$``, §3.3/§4) with trailing zeros stripped. A negative spend
  or one the money rule cannot sum raises; no cost is ever rounded to 0.
* ``usage/amount`` is the sum over requests of ``max(total_tokens, prompt_tokens +
  completion_tokens)``: embeddings report total 0 with prompt 10, and some providers report a
  total above prompt + completion; the max loses neither (``usage/units`` = ``tokens``).
* A combination whose cost and tokens are both zero in an hour (only failed or empty requests)
  yields no line item: it would carry nothing CloudZero can show, and costs row budget (§6).
  Its requests stay counted in the lake.
* The ``model`` dimension is the canonical model name of :mod:`cz_pipeline.lib.models`, one
  name on every route; ``model_raw`` adds LiteLLM's own spelling as a finer dimension.
* Master-key traffic (``api_key`` = ``litellm_proxy_master_key``, a label, not a hash) is sent
  as key prefix and key alias ``master-key``, and owned by ``master-key`` when it has no team.
* ``resource/id`` is a CZRN (§8): ``czrn:litellm:<provider>:cross-region:<owner>:llm-usage:
  <model>-<hash16>``. Segments are sanitised like CloudZero's own code (lower case,
  ``[a-z0-9-]``); the local id carries the sanitised model for humans plus 16 hex digits of a
  SHA-256 over the grain, every identity value (aliases included) and every value the line item
  sends about the resource, so sanitising never merges two combinations, the id is stable
  across runs and hours, and a changed mapping rule makes new ids instead of relabelling old.
* ``resource/tag:*`` only carry values that are part of the identity hash, so each tag has one
  value per ``resource/id`` (§4, §8 "tag trap"). A null tag value means "not sent". Request
  counts, failures and cache tokens are not CBF columns (§4, §12.9) and stay in the lake.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.hours import floor_hour
from cz_pipeline.lib.models import canonical_model_names
from cz_pipeline.lib.money import MONEY_DECIMAL, money_decimals
from cz_pipeline.lib.normalize import canonical_json

# ---------------------------------------------------------------------------------------------
# Constants of the mapping

CZRN_PATTERN = re.compile(
    r"^czrn:([a-z0-9-]+):([a-zA-Z0-9-]+):([a-z0-9-]+):([a-z0-9-]+):([a-z0-9-]+):(.+)$"
)
"""CloudZero's own CZRN validation regex (cloudzero_api.md §8)."""

TAG_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:/=+\-@]+$")
"""Characters CloudZero allows in a tag key (cloudzero_api.md §4, §12.10)."""

NUMBER_PATTERN = re.compile(r"^\d+(\.\d+)?$")
"""Wire format of ``cost/*`` and ``usage/amount`` (cloudzero_api.md §3.3)."""

USAGE_UNITS = "tokens"
REGION = "cross-region"
RESOURCE_TYPE = "llm-usage"
LINE_ITEM_TYPE = "Usage"
NOT_SPLIT = "all"  # segment/attribute value when the grain does not split by that dimension
MISSING = "unknown"  # segment value when the dimension's value is empty
API_KEY_PREFIX_CHARS = 12
MASTER_KEY = "litellm_proxy_master_key"
"""What LiteLLM stores as ``api_key`` for a call made with the proxy's master key (no hash)."""
MASTER_KEY_LABEL = "master-key"
"""Key label, key prefix and owner CloudZero shows for master-key traffic."""

COST_DECIMAL = MONEY_DECIMAL

TIME_COLUMN = "time/usage_start"
COST_COLUMN = "cost/cost"
BASE_COLUMNS: tuple[str, ...] = (
    TIME_COLUMN,
    COST_COLUMN,
    "usage/amount",
    "usage/units",
    "resource/id",
    "resource/service",
    "resource/account",
    "resource/region",
    "resource/usage_family",
    "lineitem/type",
)
TAG_PREFIX = "resource/tag:"

_LAKE_COLUMNS_NEEDED = ("start_time", "spend", "prompt_tokens", "completion_tokens", "total_tokens")

# ---------------------------------------------------------------------------------------------
# Grain


@dataclass(frozen=True)
class _Dimension:
    """A named grain dimension: the working columns it groups by and the tags it emits."""

    name: str
    keys: tuple[str, ...]  # working columns that identify a combination
    tags: tuple[tuple[str, str], ...]  # (tag key, working column it is taken from)
    description: str


MODEL_NAME = "model_name"
"""Working column of the canonical model name (``cz_pipeline.lib.models``)."""

_DERIVED_KEYS: dict[str, tuple[str, ...]] = {MODEL_NAME: ("model", "provider")}
"""Working columns computed from lake columns rather than read as they are."""

_TAG_SOURCES: dict[str, tuple[tuple[str, ...], str]] = {
    MODEL_NAME: (
        _DERIVED_KEYS[MODEL_NAME],
        "model name, the same on every route (README: Model names)",
    ),
    "model": (("model",), "model as LiteLLM logged it"),
    "api_key": (
        ("api_key",),
        f"first {API_KEY_PREFIX_CHARS} hex digits of the key hash, `{MASTER_KEY_LABEL}` for the "
        "master key",
    ),
    "key_alias": (("key_alias", "api_key"), f"key_alias, `{MASTER_KEY_LABEL}` for the master key"),
}
"""Tags that are not their lake column as it is: working column -> (lake columns, how)."""

_DIMENSIONS: dict[str, _Dimension] = {
    d.name: d
    for d in (
        _Dimension("provider", ("provider",), (("provider", "provider"),), "LLM provider"),
        _Dimension(
            "model", (MODEL_NAME,), (("model", MODEL_NAME),), "model, one name on every route"
        ),
        _Dimension(
            "model_raw", ("model",), (("model_raw", "model"),), "model as LiteLLM logged it"
        ),
        _Dimension(
            "team",
            ("team_id", "team_alias"),
            (("team_id", "team_id"), ("team_alias", "team_alias")),
            "team of the key, alias as of request time",
        ),
        _Dimension(
            "api_key",
            ("api_key", "key_alias"),
            (("api_key_prefix", "api_key"), ("key_alias", "key_alias")),
            "virtual key (hash prefix only leaves the lake) and its alias",
        ),
        _Dimension("user", ("user_id",), (("user_id", "user_id"),), "internal LiteLLM user"),
        _Dimension("end_user", ("end_user",), (("end_user", "end_user"),), "caller's customer id"),
        _Dimension(
            "model_group", ("model_group",), (("model_group", "model_group"),), "public model name"
        ),
        _Dimension("call_type", ("call_type",), (("call_type", "call_type"),), "LiteLLM call type"),
    )
}
DIMENSION_NAMES: tuple[str, ...] = tuple(_DIMENSIONS)


def _lake_columns_of(working: str) -> tuple[str, ...]:
    """The lake columns a working key column is computed from."""
    return _DERIVED_KEYS.get(working, (working,))


def _dimension_lake_columns(grain: Grain) -> list[str]:
    """Lake columns the grain's named dimensions read, in order, once each."""
    columns = [
        c for d in grain.dimensions for k in _DIMENSIONS[d].keys for c in _lake_columns_of(k)
    ]
    return list(dict.fromkeys(columns))


DEFAULT_DIMENSIONS: tuple[str, ...] = ("provider", "model", "team", "api_key", "user")


def sanitize_tag_key(key: str) -> str:
    """Replace every character CloudZero forbids in a tag key with ``_`` (§4)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:/=+\-@]", "_", key)
    return cleaned or "_"


@dataclass(frozen=True)
class Grain:
    """What one line item is per hour: named dimensions, request-tag keys, metadata keys.

    Dimensions are kept in canonical order so two spellings of the same grain compare equal and
    hash to the same resource ids.
    """

    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS
    request_tags: tuple[str, ...] = ()
    metadata_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [d for d in self.dimensions if d not in _DIMENSIONS]
        if unknown:
            raise ValueError(
                f"unknown grain dimension(s) {unknown}; choose from {list(DIMENSION_NAMES)}, "
                "tag:<key> or meta:<key>"
            )
        for label, values in (
            ("dimension", self.dimensions),
            ("request tag", self.request_tags),
            ("metadata key", self.metadata_keys),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"duplicate {label} in grain: {list(values)}")
            if any(not v or v != v.strip() for v in values):
                raise ValueError(f"empty or padded {label} in grain: {list(values)}")
        if "model_raw" in self.dimensions and "model" not in self.dimensions:
            raise ValueError("grain dimension model_raw refines model: add model to the grain")
        tag_keys = [key for key, _ in self.tag_columns()]
        if len(set(tag_keys)) != len(tag_keys):
            raise ValueError(f"grain tag keys collide after sanitising: {tag_keys}")
        canonical = tuple(d for d in DIMENSION_NAMES if d in self.dimensions)
        object.__setattr__(self, "dimensions", canonical)

    @classmethod
    def parse(cls, spec: str) -> Grain:
        """Parse ``"provider,model,team,api_key,user,tag:feature,meta:job"`` (exactly these)."""
        dims: list[str] = []
        tags: list[str] = []
        meta: list[str] = []
        for raw in spec.split(","):
            token = raw.strip()
            if not token:
                raise ValueError(f"empty entry in grain spec {spec!r}")
            if token.startswith("tag:"):
                tags.append(token[4:].strip())
            elif token.startswith("meta:"):
                meta.append(token[5:].strip())
            else:
                dims.append(token)
        return cls(tuple(dims), tuple(tags), tuple(meta))

    def to_spec(self) -> str:
        """The canonical config string; ``Grain.parse(g.to_spec()) == g``."""
        parts = [*self.dimensions]
        parts += [f"tag:{t}" for t in self.request_tags]
        parts += [f"meta:{m}" for m in self.metadata_keys]
        return ",".join(parts)

    def key_columns(self) -> list[str]:
        """Working column names that identify a combination (besides the hour)."""
        cols = [c for d in self.dimensions for c in _DIMENSIONS[d].keys]
        cols += [f"__tag_{i}" for i in range(len(self.request_tags))]
        cols += [f"__meta_{i}" for i in range(len(self.metadata_keys))]
        return cols

    def tag_columns(self) -> list[tuple[str, str]]:
        """``(tag key, working column)`` for every ``resource/tag:*`` this grain emits."""
        out = [tag for d in self.dimensions for tag in _DIMENSIONS[d].tags]
        out += [
            (f"tag.{sanitize_tag_key(t)}", f"__tag_{i}") for i, t in enumerate(self.request_tags)
        ]
        out += [
            (f"meta.{sanitize_tag_key(m)}", f"__meta_{i}") for i, m in enumerate(self.metadata_keys)
        ]
        return out

    def columns(self) -> list[str]:
        """Line-item column names, in output order."""
        return [*BASE_COLUMNS, *(TAG_PREFIX + key for key, _ in self.tag_columns())]


DEFAULT_GRAIN = Grain()


def line_item_schema(grain: Grain = DEFAULT_GRAIN) -> pa.Schema:
    """All columns are strings: the values exactly as sent (null = key not sent)."""
    return pa.schema([pa.field(c, pa.string()) for c in grain.columns()])


# ---------------------------------------------------------------------------------------------
# Lineage and README mapping


def _source_of_tag(working: str, grain: Grain) -> tuple[list[str], str]:
    if working.startswith("__tag_"):
        key = grain.request_tags[int(working.removeprefix("__tag_"))]
        return ["request_tags"], f"value of the `{key}:<value>` request tag"
    if working.startswith("__meta_"):
        key = grain.metadata_keys[int(working.removeprefix("__meta_"))]
        return ["spend_logs_metadata"], f"`{key}` of spend_logs_metadata"
    columns, how = _TAG_SOURCES.get(working, ((working,), working))
    return list(columns), how


def line_item_lineage(grain: Grain = DEFAULT_GRAIN) -> dict[str, list[str]]:
    """CBF column -> lake columns it is computed from (for Dagster column lineage)."""
    identity = _dimension_lake_columns(grain)
    if grain.request_tags:
        identity.append("request_tags")
    if grain.metadata_keys:
        identity.append("spend_logs_metadata")
    lineage: dict[str, list[str]] = {
        TIME_COLUMN: ["start_time"],
        COST_COLUMN: ["spend"],
        "usage/amount": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "usage/units": [],
        "resource/id": identity,
        "resource/service": ["provider"] if "provider" in grain.dimensions else [],
        "resource/account": _account_lineage(grain),
        "resource/region": [],
        "resource/usage_family": (
            list(_lake_columns_of(MODEL_NAME)) if "model" in grain.dimensions else []
        ),
        "lineitem/type": [],
    }
    for key, working in grain.tag_columns():
        lineage[TAG_PREFIX + key] = _source_of_tag(working, grain)[0]
    return lineage


def _account_lineage(grain: Grain) -> list[str]:
    if "team" not in grain.dimensions:
        return []
    return ["team_id", "team_alias", *(["api_key"] if "api_key" in grain.dimensions else [])]


def mapping_doc(grain: Grain = DEFAULT_GRAIN) -> list[tuple[str, str, str]]:
    """Rows ``(CBF column, source, reason)`` for the README mapping table."""
    rows = [
        (TIME_COLUMN, "start_time floored to the UTC hour", "CBF is hourly; UTC end to end"),
        (
            COST_COLUMN,
            "exact decimal sum of spend",
            "every cent once: shortest float repr -> decimal, no float sum, no exponent",
        ),
        (
            "usage/amount",
            "sum of max(total_tokens, prompt_tokens + completion_tokens)",
            "counters belong in usage, never in tags; the max loses no embedding tokens",
        ),
        ("usage/units", "constant `tokens`", "unit of usage/amount"),
        (
            "resource/id",
            "CZRN over the grain: `czrn:litellm:<provider>:cross-region:<owner>:llm-usage:"
            f"<model name>-<hash>`; owner is team_id, else `{MASTER_KEY_LABEL}`, else `unknown`; "
            "the hash covers the grain's values and every value the line item sends",
            "one resource per grain combination; a changed mapping makes a new resource, "
            "never relabels an old one",
        ),
        ("resource/service", "provider (raw), `all` if not in grain", "provider -> model view"),
        (
            "resource/account",
            f"team_alias, else team_id, else `{MASTER_KEY_LABEL}` for master-key traffic, "
            "else `unknown`",
            "the most specific owner (CBF: account/project)",
        ),
        ("resource/region", "constant `cross-region`", "LLM APIs have no region here"),
        (
            "resource/usage_family",
            "model name, the same on every route (README: Model names), `all` if not in grain",
            "one model, one name on every route",
        ),
        ("lineitem/type", "constant `Usage`", "LiteLLM spend is metered usage"),
    ]
    for key, working in grain.tag_columns():
        _sources, label = _source_of_tag(working, grain)
        how = f"{label}; not sent when empty"
        rows.append((TAG_PREFIX + key, how, "grain dimension: fixed per resource/id"))
    return rows


LINE_ITEM_LINEAGE: dict[str, list[str]] = line_item_lineage(DEFAULT_GRAIN)
MAPPING_DOC: list[tuple[str, str, str]] = mapping_doc(DEFAULT_GRAIN)

# ---------------------------------------------------------------------------------------------
# Exact decimals


def spend_decimals(spend: pa.ChunkedArray | pa.Array) -> pa.Array:
    """float64 spend -> exact decimals by the one money rule (:mod:`cz_pipeline.lib.money`).

    Raises ``ValueError`` on NaN, infinities, negatives or values the rule cannot sum; a null
    spend counts as 0.
    """
    values = pc.fill_null(spend, 0.0)
    low = pc.min(values).as_py()
    if low is not None and low < 0:
        raise ValueError(f"spend contains a negative value ({low!r}); LiteLLM spend is never < 0")
    return money_decimals(values)


def decimal_sum_of_spend(lake: pa.Table) -> Decimal:
    """Exact sum of ``spend`` (same route as ``build_line_items``), for conservation checks."""
    if lake.num_rows == 0:
        return Decimal(0)
    total = pc.sum(spend_decimals(lake["spend"])).as_py()
    return Decimal(0) if total is None else Decimal(total)


def decimal_sum_by_hour(lake: pa.Table) -> dict[datetime, Decimal]:
    """Exact spend per UTC hour of ``start_time`` (keys are aware UTC datetimes)."""
    if lake.num_rows == 0:
        return {}
    work = pa.table(
        {
            "h": pc.floor_temporal(lake["start_time"], unit="hour"),
            "c": spend_decimals(lake["spend"]),
        }
    )
    agg = work.group_by("h").aggregate([("c", "sum")])
    return {
        h: Decimal(c) for h, c in zip(agg["h"].to_pylist(), agg["c_sum"].to_pylist(), strict=True)
    }


def line_item_cost_by_hour(items: pa.Table) -> dict[str, Decimal]:
    """Exact ``cost/cost`` total per ``time/usage_start`` string of a line-item table."""
    if items.num_rows == 0:
        return {}
    work = pa.table({"h": items[TIME_COLUMN], "c": pc.cast(items[COST_COLUMN], COST_DECIMAL)})
    agg = work.group_by("h").aggregate([("c", "sum")])
    return {
        h: Decimal(c) for h, c in zip(agg["h"].to_pylist(), agg["c_sum"].to_pylist(), strict=True)
    }


def line_item_cost(items: pa.Table) -> Decimal:
    """Exact total ``cost/cost`` of a line-item table (0 when it is empty)."""
    with localcontext(prec=200):
        return sum(line_item_cost_by_hour(items).values(), Decimal(0))


def plain_decimal_strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Decimal array -> plain strings (no exponent), trailing zeros stripped, at least ``0``.

    Arrow prints values below 1e-6 as ``2.5E-8``; those are rewritten to ``0.000000025`` with
    string kernels (one pass per distinct exponent, never per row).
    """
    text = pc.cast(values, pa.string())
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if pc.any(pc.match_substring(text, "E")).as_py():
        parts = pc.extract_regex(text, r"^(?P<m>\d+(?:\.\d+)?)E-(?P<e>\d+)$")
        valid = pc.is_valid(parts)
        digits = pc.replace_substring(pc.struct_field(parts, "m"), ".", "")
        exponent = pc.fill_null(pc.cast(pc.struct_field(parts, "e"), pa.int64()), 1)
        zeros = pc.binary_repeat(pa.scalar("0"), pc.subtract(exponent, 1))
        expanded = pc.binary_join_element_wise("0.", zeros, digits, "")
        unhandled = pc.and_(pc.match_substring(text, "E"), pc.invert(pc.fill_null(valid, False)))
        if pc.any(unhandled).as_py():
            raise ValueError("unexpected decimal text from Arrow: exponent form not understood")
        text = pc.if_else(pc.fill_null(valid, False), expanded, text)
    # Strip trailing fractional zeros: "1.2300" -> "1.23", "5.000" -> "5", "0.000" -> "0".
    has_point = pc.match_substring(text, ".")
    stripped = pc.replace_substring_regex(text, r"\.?0+$", "")
    stripped = pc.if_else(pc.equal(stripped, ""), "0", stripped)
    return pc.if_else(has_point, stripped, text)


# ---------------------------------------------------------------------------------------------
# Building line items


def _sanitize_segment(values: pa.Array) -> pa.Array:
    """CZRN segment rule of CloudZero's code (§8): lower, ``[a-z0-9-]``, collapse, trim."""
    s = pc.utf8_lower(values)
    s = pc.replace_substring_regex(s, r"[^a-z0-9-]+", "-")
    s = pc.replace_substring_regex(s, r"-{2,}", "-")
    s = pc.utf8_trim(s, "-")
    return pc.if_else(pc.equal(s, ""), MISSING, s)


def _request_tag_values(tags: pa.ChunkedArray, key: str) -> pa.Array:
    """Value of the first ``key:<value>`` entry of each row's request_tags, else ``""``."""
    arr = tags.combine_chunks() if isinstance(tags, pa.ChunkedArray) else tags
    n = len(arr)
    flat = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr)
    prefix = key + ":"
    mask = pc.starts_with(flat, prefix)
    values = pc.utf8_slice_codeunits(pc.filter(flat, mask), start=len(prefix))
    owners = pc.filter(parents, mask).to_numpy(zero_copy_only=False)
    rows, first = np.unique(owners, return_index=True)
    index = np.full(n, -1, dtype=np.int64)
    index[rows] = first
    picked = pc.take(values, pa.array(index, mask=index < 0))
    return pc.fill_null(picked, "")


def _json_scalar_text(value: object) -> str:
    """A metadata value as tag text: strings as they are, other JSON compactly, null as ``""``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return canonical_json(value)


def _metadata_values(column: pa.ChunkedArray, keys: tuple[str, ...]) -> list[pa.Array]:
    """Extract ``keys`` from a JSON-text column, parsing each *distinct* text once."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(arr)
    distinct = encoded.dictionary.to_pylist()
    parsed: list[dict[str, object]] = []
    for text in distinct:  # loop over distinct metadata texts, not over rows
        try:
            obj = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"spend_logs_metadata is not valid JSON: {exc}") from exc
        parsed.append(obj if isinstance(obj, dict) else {})
    out = []
    for key in keys:
        dictionary = pa.array([_json_scalar_text(obj.get(key)) for obj in parsed], pa.string())
        out.append(pc.fill_null(pc.take(dictionary, encoded.indices), ""))
    return out


def _escape_separator(values: pa.Array) -> pa.Array:
    """Make ``\\x1f`` safe as a join separator: ``\\`` -> ``\\\\``, ``\\x1f`` -> ``\\u001f``."""
    return pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), "\x1f", "\\u001f")


def _empty_or(values: pa.Array) -> pa.Array:
    """``""`` -> null, so empty tags are not sent (no ``"None"``/empty tag values)."""
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _first_nonempty(first: pa.Array, *rest: pa.Array, default: str) -> pa.Array:
    """Element-wise first non-empty string of the arrays, else ``default``."""
    result: pa.Array = pa.repeat(pa.scalar(default, pa.string()), len(first))
    for arr in reversed((first, *rest)):
        result = pc.if_else(pc.equal(arr, ""), result, arr)
    return result


def _check_lake(lake: pa.Table, grain: Grain) -> None:
    needed = set(_LAKE_COLUMNS_NEEDED)
    needed.update(_dimension_lake_columns(grain))
    if grain.request_tags:
        needed.add("request_tags")
    if grain.metadata_keys:
        needed.add("spend_logs_metadata")
    missing = sorted(needed - set(lake.column_names))
    if missing:
        raise ValueError(f"lake table lacks columns {missing}")
    start = lake.schema.field("start_time").type
    if not pa.types.is_timestamp(start) or start.tz not in ("UTC", "+00:00", "Etc/UTC"):
        raise ValueError(f"start_time must be a UTC timestamp, got {start}")


def _key_values(lake: pa.Table, grain: Grain) -> dict[str, pa.Array | pa.ChunkedArray]:
    """Working key column -> its value per lake row, ``""`` for missing."""
    keys: dict[str, pa.Array | pa.ChunkedArray] = {}
    for d in grain.dimensions:
        for name in _DIMENSIONS[d].keys:
            if name == MODEL_NAME:
                keys[name] = canonical_model_names(lake["model"], lake["provider"])
            else:
                keys[name] = pc.fill_null(pc.cast(lake[name], pa.string()), "")
    for i, tag in enumerate(grain.request_tags):
        keys[f"__tag_{i}"] = _request_tag_values(lake["request_tags"], tag)
    if grain.metadata_keys:
        for i, values in enumerate(
            _metadata_values(lake["spend_logs_metadata"], grain.metadata_keys)
        ):
            keys[f"__meta_{i}"] = values
    return keys


def _descriptions(combos: pa.Table, grain: Grain) -> dict[str, pa.Array]:
    """What a line item says about its resource, from its combination's key values.

    Returns the CZRN's provider, owner and model segments (``__seg_*``), ``resource/service``,
    ``resource/account``, ``resource/usage_family`` and every ``resource/tag:*`` (null = not
    sent). Master-key traffic (``api_key`` = ``litellm_proxy_master_key``, not a hash) is
    labelled ``master-key`` as key prefix, key alias and, without a team, owner.
    """
    n = combos.num_rows
    dims = set(grain.dimensions)

    def col(name: str) -> pa.Array:
        return combos[name].combine_chunks()

    def const(value: str) -> pa.Array:
        return pa.repeat(pa.scalar(value, pa.string()), n)

    master = (
        pc.equal(col("api_key"), MASTER_KEY)
        if "api_key" in dims
        else pa.repeat(pa.scalar(False), n)
    )
    master_label = pc.if_else(master, MASTER_KEY_LABEL, "")
    segments = ("__seg_provider", "__seg_owner", "__seg_model")
    attributes = ("resource/service", "resource/account", "resource/usage_family")
    out: dict[str, pa.Array] = dict.fromkeys((*segments, *attributes), const(NOT_SPLIT))
    if "provider" in dims:
        out["__seg_provider"] = _sanitize_segment(col("provider"))
        out["resource/service"] = _first_nonempty(col("provider"), default=MISSING)
    if "team" in dims:
        out["__seg_owner"] = _sanitize_segment(
            _first_nonempty(col("team_id"), master_label, default="")
        )
        out["resource/account"] = _first_nonempty(
            col("team_alias"), col("team_id"), master_label, default=MISSING
        )
    if "model" in dims:
        out["__seg_model"] = _sanitize_segment(col(MODEL_NAME))
        out["resource/usage_family"] = _first_nonempty(col(MODEL_NAME), default=MISSING)
    for key, working in grain.tag_columns():
        values = col(working)
        if key == "api_key_prefix":
            prefix = pc.utf8_slice_codeunits(values, 0, API_KEY_PREFIX_CHARS)
            values = pc.if_else(master, MASTER_KEY_LABEL, prefix)
        elif key == "key_alias":
            values = _first_nonempty(values, master_label, default="")
        out[TAG_PREFIX + key] = _empty_or(values)
    return out


def _resource_ids(combos: pa.Table, grain: Grain, described: dict[str, pa.Array]) -> pa.Array:
    """CZRNs whose local id hashes the grain, every key value and every value sent about the
    resource: two combinations never share an id, and a changed mapping rule (model names,
    labels) yields new ids instead of relabelling resources CloudZero already holds."""
    sent = [
        pc.fill_null(described[name], "") for name in described if not name.startswith("__seg_")
    ]
    values = [combos[k].combine_chunks() for k in grain.key_columns()] + sent
    identity = pc.binary_join_element_wise(
        pa.scalar(grain.to_spec()), *[_escape_separator(v) for v in values], "\x1f"
    )
    digests = pa.array(  # a loop over output line items, not lake rows
        [hashlib.sha256(s.encode()).hexdigest()[:16] for s in identity.to_pylist()], pa.string()
    )
    return pc.binary_join_element_wise(
        "czrn:litellm:",
        described["__seg_provider"],
        f":{REGION}:",
        described["__seg_owner"],
        f":{RESOURCE_TYPE}:",
        described["__seg_model"],
        "-",
        digests,
        "",
    )


def build_line_items(lake: pa.Table, grain: Grain = DEFAULT_GRAIN) -> pa.Table:
    """Aggregate lake rows (one or many hours) into CBF line items, all values wire strings.

    Rows are sorted by (``time/usage_start``, ``resource/id``) so the output, and every body
    rendered from it, is byte-reproducible.
    """
    _check_lake(lake, grain)
    schema = line_item_schema(grain)
    if lake.num_rows == 0:
        return schema.empty_table()

    keys = _key_values(lake, grain)
    prompt_plus_completion = pc.add(
        pc.fill_null(lake["prompt_tokens"], 0), pc.fill_null(lake["completion_tokens"], 0)
    )
    tokens = pc.max_element_wise(pc.fill_null(lake["total_tokens"], 0), prompt_plus_completion)
    key_names = grain.key_columns()
    work = pa.table(
        {
            "__hour": pc.floor_temporal(lake["start_time"], unit="hour"),
            **{k: keys[k] for k in key_names},
            "__cost": spend_decimals(lake["spend"]),
            "__tokens": pc.cast(tokens, pa.int64()),
        }
    )
    agg = work.group_by(["__hour", *key_names], use_threads=False).aggregate(
        [("__cost", "sum"), ("__tokens", "sum")]
    )
    zero = pa.scalar(Decimal(0), COST_DECIMAL)
    keep = pc.or_(pc.not_equal(agg["__cost_sum"], zero), pc.not_equal(agg["__tokens_sum"], 0))
    agg = agg.filter(keep).combine_chunks()
    if agg.num_rows == 0:
        return schema.empty_table()

    described = _descriptions(agg, grain)
    out: dict[str, pa.Array] = {
        **described,
        TIME_COLUMN: pc.strftime(agg["__hour"], format="%Y-%m-%dT%H:00:00Z"),
        COST_COLUMN: plain_decimal_strings(agg["__cost_sum"]),
        "usage/amount": pc.cast(agg["__tokens_sum"], pa.string()),
        "usage/units": pa.repeat(pa.scalar(USAGE_UNITS), agg.num_rows),
        "resource/id": _resource_ids(agg, grain, described),
        "resource/region": pa.repeat(pa.scalar(REGION), agg.num_rows),
        "lineitem/type": pa.repeat(pa.scalar(LINE_ITEM_TYPE), agg.num_rows),
    }
    table = pa.table([out[c] for c in schema.names], schema=schema)
    return table.sort_by([(TIME_COLUMN, "ascending"), ("resource/id", "ascending")])


def is_valid_czrn(value: str) -> bool:
    """True if ``value`` passes CloudZero's CZRN regex (§8)."""
    return CZRN_PATTERN.match(value) is not None


def line_items_for_hour(items: pa.Table, hour_text: str) -> pa.Table:
    """The rows of one ``time/usage_start`` value (e.g. ``2025-01-31T23:00:00Z``)."""
    return items.filter(pc.equal(items[TIME_COLUMN], hour_text))


def usage_start_text(hours: Iterable[datetime]) -> list[str]:
    """Wire form of whole UTC hours (``YYYY-MM-DDTHH:00:00Z``)."""
    return [floor_hour(h).strftime("%Y-%m-%dT%H:00:00Z") for h in hours]
