"""The rule for values in LiteLLM's ``metadata`` that a source cannot read as LiteLLM writes them.

``metadata`` should be a JSON object whose token counts and cost components are numbers that fit
their column. A row that breaks the rule (metadata that is an array, a string, a number or null;
a cost of "n/a"; a token count of "12abc" or 1e20) is kept: the value reads as null and the row's
``row_problems`` column says which field held what, so the ``values_readable`` check holds its
hour back and names the row, while the other hours go on. The PostgreSQL source applies the rule
in its query, the REST source in Arrow (:func:`metadata_number`); both take the fields, labels,
limits and wording from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class MetadataNumber:
    """A number LiteLLM keeps inside ``metadata``."""

    label: str  # where it lives, as row_problems names it
    whole: bool  # a token count (int64), else a cost (float64)

    @property
    def plain_chars(self) -> int:
        """The longest plain decimal text (no exponent, as PostgreSQL prints a number) that
        fits: under 10**18 for a count, about 1e-296 to 1e298 (or 0) for a cost."""
        return WHOLE_CHARS if self.whole else FLOAT_CHARS

    @property
    def largest(self) -> float:
        return float(10**self.plain_chars)

    @property
    def smallest(self) -> float:
        """The smallest non-zero magnitude that fits (counts are whole)."""
        return 0.0 if self.whole else 10.0 ** -(self.plain_chars - 2)

    @property
    def problem(self) -> str:
        """The start of this field's row_problems entry; the value's JSON type and text follow."""
        return f"{self.label} is not a {'whole ' if self.whole else ''}number in range: "


COST_FIELDS = ("input_cost", "output_cost", "cache_read_cost", "cache_creation_cost")
METADATA_NUMBERS: dict[str, MetadataNumber] = {
    "cache_read_input_tokens": MetadataNumber(
        "metadata.usage_object.cache_read_input_tokens", whole=True
    ),
    "cached_tokens": MetadataNumber(
        "metadata.usage_object.prompt_tokens_details.cached_tokens", whole=True
    ),
    "cache_creation_input_tokens": MetadataNumber(
        "metadata.usage_object.cache_creation_input_tokens", whole=True
    ),
    **{
        name: MetadataNumber(f"metadata.cost_breakdown.{name}", whole=False) for name in COST_FIELDS
    },
}
NOT_AN_OBJECT = "metadata is not a JSON object but "
# Numeric text as PostgreSQL's numeric reads it, with an exponent too short to overflow it.
NUMERIC_TEXT = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$"
# Characters of a number's plain decimal text that fit: counts stay far below int64's maximum,
# costs within float64's normal range, whatever the cast.
WHOLE_CHARS = 18
FLOAT_CHARS = 298
# Characters of an offending value quoted in row_problems.
QUOTED_CHARS = 24


@dataclass(frozen=True)
class GuardedNumbers:
    """A metadata number column: the values that follow the rule, and the problems of the rest."""

    values: pa.Array
    problems: pa.Array  # string; null where the value is fine or absent


def _in_range(values: pa.Array, field: MetadataNumber) -> pa.Array:
    magnitude = pc.abs(values)
    normal = pc.and_(
        pc.less(magnitude, field.largest),
        pc.or_(pc.equal(magnitude, 0.0), pc.greater_equal(magnitude, field.smallest)),
    )
    return pc.and_(pc.is_finite(values), normal)


def metadata_number(name: str, values: Sequence[Any]) -> GuardedNumbers:
    """Values parsed from JSON (numbers, None, or whatever else a row held) for the field
    ``name`` of :data:`METADATA_NUMBERS`, as an Arrow column plus each row's problem."""
    field = METADATA_NUMBERS[name]
    type_ = pa.int64() if field.whole else pa.float64()
    try:
        exact = pa.array(values, type_)  # the usual case: numbers and None only
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        exact = None
    texts = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    if exact is not None:
        numbers = exact.cast(pa.float64(), safe=False)  # only to compare magnitudes
        readable = _in_range(numbers, field)
        result = pc.if_else(readable, exact, pa.scalar(None, type_))
    else:
        bare = pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, r'^"(.*)"$', r"\1"))
        numeric = pc.match_substring_regex(bare, NUMERIC_TEXT)
        numbers = pc.if_else(numeric, bare, pa.scalar(None, pa.string())).cast(pa.float64())
        readable = pc.and_(numeric, _in_range(numbers, field))
        rounded = pc.round(numbers) if field.whole else numbers
        result = pc.if_else(readable, rounded, pa.scalar(None, pa.float64())).cast(type_)
    present = pc.and_(pc.is_valid(texts), pc.not_equal(texts, "null"))
    bad = pc.and_(present, pc.invert(pc.fill_null(readable, False)))
    types = pa.array([json_type(v) for v in values], pa.string())
    problem = pc.binary_join_element_wise(
        field.problem, types, " ", pc.utf8_slice_codeunits(texts, 0, QUOTED_CHARS), ""
    )
    return GuardedNumbers(result, pc.if_else(bad, problem, pa.scalar(None, pa.string())))


def json_type(value: Any) -> str:
    """The JSON type of a value parsed from JSON, as PostgreSQL's ``jsonb_typeof`` names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "string"


def row_problems(not_objects: pa.Array, numbers: Sequence[pa.Array]) -> pa.Array:
    """Each row's problems joined with '; ', null for a sound row. ``not_objects`` holds the
    JSON type of metadata that is not an object (null where it is one)."""
    joined = pc.binary_join_element_wise(NOT_AN_OBJECT + "a JSON ", not_objects, "")
    for problems in numbers:
        # Not null_handling="skip": pyarrow 26 drops all-null rows with it.
        both = pc.binary_join_element_wise(joined, problems, "; ")
        joined = pc.coalesce(both, joined, problems)
    return joined
