"""Exact money: the one rule that turns float64 spend into decimals, for checks and line items.

LiteLLM stores ``spend`` as float8. The number it meant is the float's shortest round-trip text
(0.1, not 0.1000000000000000055...), which is also what PostgreSQL prints, so lake, source and
CloudZero sums agree digit for digit when each value is taken as that text and summed in decimal.

One scale for every sum: ``decimal256(76, 40)``. A shortest text has at most 17 significant
digits, so every value in [1e-24, 1e20) holds exactly, with 16 digits of headroom for sums
(Arrow's decimal sum wraps silently on overflow). The two edges:

* from 1e20 USD up (and NaN, infinities) there is no meaningful exact sum: :func:`money_decimals`
  raises and :func:`exact_money` tells callers which rows those are, so a check can name them;
* below 1e-24 a value is rounded to 40 decimals, but a real cost never becomes 0: what would
  round to 0 becomes the smallest unit, 1e-40 (an error below 1e-40 per row, never a lost row).
"""

from __future__ import annotations

import decimal
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

MONEY_DECIMAL = pa.decimal256(76, 40)
MAX_MONEY = 1e20
"""Magnitudes from here up cannot be summed exactly at :data:`MONEY_DECIMAL`."""
SHORTEST_TEXT_FROM = 1e-24
"""Below this magnitude a shortest text needs more than 40 decimals."""
SMALLEST_UNIT = Decimal("1e-40")
EXACT = decimal.Context(prec=200)
"""Enough digits that adding and subtracting money sums never rounds (the default keeps 28)."""


def exact_money(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Which values :func:`money_decimals` takes: finite and below :data:`MAX_MONEY`."""
    return pc.and_kleene(pc.is_finite(values), pc.less(pc.abs(values), MAX_MONEY))


def money_decimals(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """float64 -> :data:`MONEY_DECIMAL`, each value as its shortest round-trip text; nulls stay.

    Each distinct value is converted once (costs repeat a lot: tokens times a price). Raises
    ``ValueError`` for NaN, infinities and magnitudes of :data:`MAX_MONEY` or more.
    """
    if values.type != pa.float64():
        raise TypeError(f"money needs float64 values, got {values.type}")
    flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    encoded = pc.dictionary_encode(flat)
    distinct = encoded.dictionary
    outside = len(distinct) - int(pc.sum(exact_money(distinct)).as_py() or 0)
    if outside:
        raise ValueError(
            f"{outside} distinct value(s) cannot be summed exactly (NaN, infinite or "
            f"magnitude of at least {MAX_MONEY:g})"
        )
    magnitude = pc.abs(distinct)
    tiny = pc.and_(pc.less(magnitude, SHORTEST_TEXT_FROM), pc.not_equal(magnitude, 0.0))
    exact = pc.cast(pc.cast(pc.if_else(tiny, 0.0, distinct), pa.string()), MONEY_DECIMAL)
    if pc.any(tiny).as_py():
        exact = pc.if_else(tiny, _tiny_decimals(pc.if_else(tiny, distinct, 0.0)), exact)
    return pc.take(exact, encoded.indices)


def _tiny_decimals(values: pa.Array) -> pa.Array:
    """Values below 1e-24 rounded to 40 decimals, kept at least one unit away from 0."""
    rounded = pc.cast(values, MONEY_DECIMAL, safe=False)
    unit = pa.scalar(SMALLEST_UNIT, MONEY_DECIMAL)
    lost = pc.and_(pc.equal(rounded, pa.scalar(Decimal(0), MONEY_DECIMAL)), pc.not_equal(values, 0))
    signed_unit = pc.if_else(pc.less(values, 0.0), pc.negate(unit), unit)
    return pc.if_else(lost, signed_unit, rounded)


def money_sum(values: pa.Array | pa.ChunkedArray) -> Decimal:
    """Exact decimal sum of float64 money (:func:`money_decimals`); nulls are skipped, as SQL's
    ``sum`` does, and an empty or all-null column sums to 0."""
    if len(values) == 0:
        return Decimal(0)
    total = pc.sum(money_decimals(values)).as_py()
    return Decimal(0) if total is None else Decimal(total)


def plain(value: Decimal) -> str:
    """A decimal as plain digits without trailing zeros (0.0000025, not 2.5E-6)."""
    if not value.is_finite():
        return str(value)
    if value.is_zero():
        return "0"
    return format(EXACT.normalize(value), "f")
