"""The one exact-money rule, and the checks and the line items agreeing on it value for value."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import numpy as np
import pyarrow as pa
import pytest

from cz_pipeline.lib import cbf_checks
from cz_pipeline.lib.cbf import DEFAULT_GRAIN, build_line_items, line_item_cost
from cz_pipeline.lib.checks import SPEND_AND_TOKENS_VALID, HourChecker, SourceTotals
from cz_pipeline.lib.money import SMALLEST_UNIT, money_decimals, money_sum, plain
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

HOUR = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [2.5e-08, 1e-12, 0.1, 1234.5678, 0.1 + 0.2, 0.0030850000000000005, 1e-19, 1.2e-23, -0.1],
)
def test_each_float_is_its_shortest_text(value: float) -> None:
    assert money_sum(pa.array([value])) == Decimal(repr(value))


def test_sums_are_exact_over_many_magnitudes_and_chunks() -> None:
    rng = np.random.default_rng(7)
    values = rng.uniform(1, 10, 20_000) * 10.0 ** rng.integers(-24, 12, 20_000)
    chunked = pa.chunked_array([values[:7_000], values[7_000:]])
    with localcontext(prec=200):  # the default 28 digits would round the oracle itself
        expected = sum((Decimal(repr(v)) for v in values.tolist()), Decimal(0))
    assert money_sum(chunked) == expected
    assert float(expected) != 0.0


def test_nulls_are_skipped_and_nothing_sums_to_zero() -> None:
    assert money_sum(pa.array([0.1, None, 0.2])) == Decimal("0.3")
    assert money_sum(pa.array([], pa.float64())) == 0
    assert money_sum(pa.array([None], pa.float64())) == 0
    assert money_decimals(pa.array([None, 0.5])).to_pylist() == [None, Decimal("0.5")]


def test_below_1e_24_values_round_to_40_decimals_but_never_to_zero() -> None:
    assert money_sum(pa.array([1.5e-30, 1.0])) == Decimal("1.0000000000000000000000000000015")
    assert money_sum(pa.array([5e-324])) == SMALLEST_UNIT
    assert money_sum(pa.array([-5e-324])) == -SMALLEST_UNIT
    assert money_sum(pa.array([1e-45, 1e-45, 0.0])) == 2 * SMALLEST_UNIT


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e20, -1e21])
def test_values_without_an_exact_sum_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="cannot be summed exactly"):
        money_sum(pa.array([0.1, value]))


def test_money_must_be_float64() -> None:
    with pytest.raises(TypeError, match="float64"):
        money_sum(pa.array([1, 2]))


def test_plain_prints_digits_without_exponent_or_trailing_zeros() -> None:
    assert plain(Decimal("2.50E-8")) == "0.000000025"
    assert plain(Decimal("0E-40")) == "0"
    assert plain(Decimal("12.3400")) == "12.34"


@pytest.mark.parametrize("tiny", [1.2e-23, 1.5e-30, 5e-324])
def test_checks_and_line_items_agree_on_a_tiny_spend(tiny: float) -> None:
    """A spend of 1.2e-23 used to pass every check and then fail the line items for the run."""
    spends = [tiny, 0.1, 2.5e-08]
    rows = [
        {
            "request_id": f"r{index}",
            "start_time": HOUR + timedelta(minutes=index),
            "end_time": HOUR + timedelta(minutes=index),
            "spend": spend,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "cache_read_tokens": 0,
            "cache_creation_tokens": 0,
            "provider": "openai",
            "model": "gpt-4o",
            "team_id": "team-1",
            "api_key": "a" * 64,
            "user_id": f"user-{index}",
            "status": "success",
        }
        for index, spend in enumerate(spends)
    ]
    lake = pa.Table.from_pylist(rows, schema=LAKE_SCHEMA)
    checked_spend = money_sum(lake["spend"])

    checker = HourChecker(HOUR)
    checker.add(lake)
    outcomes = {o.check: o for o in checker.finish(SourceTotals(3, checked_spend), None)}
    assert all(o.passed for o in outcomes.values()), outcomes
    assert outcomes[SPEND_AND_TOKENS_VALID].passed

    items = build_line_items(lake, DEFAULT_GRAIN)
    costs = [Decimal(c) for c in items["cost/cost"].to_pylist()]
    assert all(cost > 0 for cost in costs)  # the tiny request's own line item is not 0
    assert line_item_cost(items) == checked_spend
    assert cbf_checks.cost_conserved(HOUR, items, checked_spend, Decimal(0)).passed
