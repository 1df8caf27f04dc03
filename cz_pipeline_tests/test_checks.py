"""The hourly, late-row and daily checks, on LAKE_SCHEMA tables built by hand (no database)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import pyarrow as pa
import pytest

from cz_pipeline.lib.checks import (
    DAILY_RECONCILIATION,
    DIFFERENCES_SCHEMA,
    HOUR_CHECKS,
    LATE_ROWS,
    MATCHES_SOURCE,
    REQUEST_ID_UNIQUE,
    REQUIRED_FIELDS,
    SPEND_AND_TOKENS_VALID,
    START_TIME_IN_HOUR,
    UNPRICED_TRAFFIC,
    VALUES_READABLE,
    CheckOutcome,
    HourChecker,
    SourceTotals,
    blocking_failures,
    daily_reconciliation,
    differences_markdown,
    held_back,
    late_rows,
)
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

HOUR = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
LABEL = "2026-11-01 03:00 UTC"
KEY = "4a68fbf9a6ece427d28a53281ac197e7c1dea03dfe238f7549276ddbfdd7b461"
OTHER_KEY = "9f86d081884c7d659a2feb0da93b5e8c1a3e2b1f0e6d3c4b5a69788796a5b4c3"

_DEFAULTS: dict[str, Any] = {
    "call_type": "acompletion",
    "status": "success",
    "model": "openai/gpt-4o",
    "provider": "openai",
    "api_key": KEY,
    "spend": 0.000225,
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "total_tokens": 30,
    "cache_read_tokens": 0,
    "cache_creation_tokens": 0,
    "request_tags": [],
    "user_agent_tags": [],
}


def lake_row(request_id: str | None, minute: float = 0.0, **values: Any) -> dict[str, Any]:
    start = HOUR + timedelta(minutes=minute)
    row: dict[str, Any] = dict.fromkeys(LAKE_SCHEMA.names)
    row.update(_DEFAULTS)
    row.update(request_id=request_id, start_time=start, end_time=start)
    row.update(values)
    return row


def lake_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=LAKE_SCHEMA)


def clean_rows(n: int = 10) -> list[dict[str, Any]]:
    return [lake_row(f"r{i}", minute=i * 59 / max(n, 1)) for i in range(n)]


def check_hour(
    *batches: pa.Table,
    source: SourceTotals | None = None,
    skip_reason: str | None = "the test source has no aggregate to reconcile with",
    **options: Any,
) -> dict[str, CheckOutcome]:
    checker = HourChecker(HOUR, **options)
    for batch in batches:
        checker.add(batch)
    outcomes = checker.finish(source, None if source else skip_reason)
    assert [o.check for o in outcomes] == list(HOUR_CHECKS)
    return {o.check: o for o in outcomes}


def totals_of(rows: Sequence[dict[str, Any]]) -> SourceTotals:
    """What PostgreSQL's sum(spend::text::numeric) says: exact decimals of the shortest text."""
    with localcontext(prec=200):
        spend = sum((Decimal(repr(r["spend"])) for r in rows), Decimal(0))
    return SourceTotals(len(rows), spend)


def only_failures(outcomes: dict[str, CheckOutcome]) -> set[str]:
    return {name for name, o in outcomes.items() if not o.passed}


# --- the clean hour -------------------------------------------------------------------------


def test_a_clean_hour_passes_every_check_and_is_not_held_back() -> None:
    rows = clean_rows(10)
    outcomes = check_hour(lake_table(rows), source=totals_of(rows))
    assert only_failures(outcomes) == set()
    assert not held_back(outcomes.values())
    assert len(set(outcomes.values())) == len(HOUR_CHECKS)  # hashable despite the metadata dict
    assert blocking_failures(outcomes.values()) == []
    for outcome in outcomes.values():
        assert outcome.hour == HOUR
        assert outcome.reason.startswith(f"{LABEL}: ")
        assert outcome.offending_request_ids == ()
        assert outcome.metadata["rows"] == 10
    assert {o.check: o.severity for o in outcomes.values()} == {
        REQUIRED_FIELDS: "ERROR",
        START_TIME_IN_HOUR: "ERROR",
        REQUEST_ID_UNIQUE: "ERROR",
        SPEND_AND_TOKENS_VALID: "ERROR",
        VALUES_READABLE: "ERROR",
        MATCHES_SOURCE: "ERROR",
        UNPRICED_TRAFFIC: "WARN",
    }


def test_an_empty_hour_passes_against_an_empty_source() -> None:
    outcomes = check_hour(source=SourceTotals(0, Decimal(0)))
    assert only_failures(outcomes) == set()
    assert outcomes[MATCHES_SOURCE].metadata["lake_spend"] == "0"


# --- values_readable ----------------------------------------------------------------------


def test_rows_with_problems_hold_the_hour_back_naming_each_row_and_why() -> None:
    rows = clean_rows(30)
    for i in (4, 9, 14, 19, 24):
        rows[i]["row_problems"] = f"metadata is not a JSON object but a JSON array (row {i})"
    table = lake_table(rows)
    outcome = check_hour(table.slice(0, 10), table.slice(10), source=totals_of(rows))[
        VALUES_READABLE
    ]
    assert outcome.blocking
    assert outcome.offending_request_ids == ("r4", "r9", "r14", "r19", "r24")
    assert outcome.metadata["rows_with_problems"] == 5
    assert outcome.reason == (
        f"{LABEL}: 5 rows hold values LiteLLM does not write, so they cannot be read in full "
        "(request r4: metadata is not a JSON object but a JSON array (row 4); "
        "request r9: metadata is not a JSON object but a JSON array (row 9); "
        "request r14: metadata is not a JSON object but a JSON array (row 14); and 2 more); "
        "the rows are kept, the hour is held back"
    )
    assert "request r24:" in str(outcome.metadata["problems"])


def test_a_batch_without_the_problems_column_is_not_taken_as_sound() -> None:
    outcome = check_hour(lake_table(clean_rows(3)).drop_columns(["row_problems"]))[VALUES_READABLE]
    assert not outcome.passed
    assert "could not check 3 rows (row_problems is missing)" in outcome.reason


# --- spend_and_tokens_valid ----------------------------------------------------------------


def test_negative_spend_fails_with_the_rows_and_their_total() -> None:
    rows = clean_rows(5)
    rows[1]["spend"] = -0.5
    rows[3]["spend"] = -0.25
    outcome = check_hour(lake_table(rows))[SPEND_AND_TOKENS_VALID]
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert outcome.reason == f"{LABEL}: 2 rows with negative spend"
    assert outcome.offending_request_ids == ("r1", "r3")
    assert outcome.metadata["negative_spend_rows"] == 2
    assert outcome.metadata["negative_spend_total"] == "-0.75"
    assert outcome.metadata["invalid_rows"] == 2
    assert outcome.metadata["nan_spend_rows"] == 0


def test_nan_and_infinite_spend_fail() -> None:
    rows = clean_rows(4)
    rows[0]["spend"] = math.nan
    rows[2]["spend"] = math.inf
    outcomes = check_hour(lake_table(rows), source=totals_of(clean_rows(4)))
    outcome = outcomes[SPEND_AND_TOKENS_VALID]
    assert not outcome.passed
    assert outcome.offending_request_ids == ("r0", "r2")
    assert outcome.metadata["nan_spend_rows"] == 1
    assert outcome.metadata["infinite_spend_rows"] == 1
    assert outcome.metadata["negative_spend_rows"] == 0
    assert "1 row with NaN spend" in outcome.reason
    # The hour cannot be reconciled either: those rows have no exact sum.
    assert not outcomes[MATCHES_SOURCE].passed
    assert outcomes[MATCHES_SOURCE].metadata["lake_unsummable_spend_rows"] == 2


def test_absurd_spend_fails_without_breaking_the_exact_sums() -> None:
    rows = clean_rows(3)
    rows[0]["spend"] = -1e25
    rows[1]["spend"] = 1e20
    outcomes = check_hour(lake_table(rows), source=totals_of(clean_rows(3)))
    outcome = outcomes[SPEND_AND_TOKENS_VALID]
    assert outcome.offending_request_ids == ("r0", "r1")
    assert outcome.metadata["too_large_spend_rows"] == 2
    assert outcome.metadata["negative_spend_rows"] == 1
    assert outcome.metadata["negative_spend_total"] == "0"
    assert outcomes[MATCHES_SOURCE].metadata["lake_unsummable_spend_rows"] == 2
    assert not outcomes[MATCHES_SOURCE].passed


def test_negative_token_counts_fail_per_column() -> None:
    rows = clean_rows(4)
    rows[1]["completion_tokens"] = -5
    rows[2]["cache_read_tokens"] = -1
    rows[2]["total_tokens"] = -3
    outcome = check_hour(lake_table(rows))[SPEND_AND_TOKENS_VALID]
    assert not outcome.passed
    assert outcome.offending_request_ids == ("r1", "r2")
    assert outcome.metadata["invalid_rows"] == 2
    assert outcome.metadata["negative_completion_tokens_rows"] == 1
    assert outcome.metadata["negative_total_tokens_rows"] == 1
    assert outcome.metadata["negative_cache_read_tokens_rows"] == 1
    assert outcome.metadata["negative_prompt_tokens_rows"] == 0
    assert "1 row with negative completion_tokens" in outcome.reason


def test_zero_spend_and_zero_tokens_are_valid() -> None:
    rows = clean_rows(3)
    rows[0].update(spend=0.0, prompt_tokens=0, completion_tokens=0, total_tokens=0)
    rows[1]["spend"] = -0.0
    assert check_hour(lake_table(rows))[SPEND_AND_TOKENS_VALID].passed


# --- required_fields -----------------------------------------------------------------------


def test_a_null_request_id_fails_required_fields() -> None:
    rows = clean_rows(4)
    rows[1]["request_id"] = None
    rows[2]["spend"] = None
    outcome = check_hour(lake_table(rows))[REQUIRED_FIELDS]
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert outcome.metadata["null_request_id"] == 1
    assert outcome.metadata["null_spend"] == 1
    assert outcome.metadata["rows_with_missing_values"] == 2
    assert outcome.metadata["type_mismatches"] == ""
    # The row without a request_id cannot be named; the other one can.
    assert outcome.offending_request_ids == ("r2",)
    assert "2 rows lack a value (1 null request_id, 1 null spend)" in outcome.reason


def test_a_column_with_the_wrong_type_fails_required_fields_and_the_checks_using_it() -> None:
    table = lake_table(clean_rows(3))
    naive = table.column("start_time").cast(pa.timestamp("ms"))
    table = table.set_column(table.schema.get_field_index("start_time"), "start_time", naive)
    outcomes = check_hour(table)
    assert only_failures(outcomes) == {REQUIRED_FIELDS, START_TIME_IN_HOUR}
    assert outcomes[REQUIRED_FIELDS].metadata["type_mismatches"] == (
        "start_time is timestamp[ms], expected timestamp[ms, tz=UTC]"
    )
    window = outcomes[START_TIME_IN_HOUR]
    assert window.metadata["unchecked_rows"] == 3
    assert "could not check 3 rows" in window.reason


def test_a_missing_column_fails_required_fields() -> None:
    table = lake_table(clean_rows(2)).drop_columns(["total_tokens"])
    outcomes = check_hour(table)
    assert outcomes[REQUIRED_FIELDS].metadata["type_mismatches"] == "total_tokens is missing"
    assert not outcomes[SPEND_AND_TOKENS_VALID].passed
    assert not outcomes[UNPRICED_TRAFFIC].passed


# --- request_id_unique ---------------------------------------------------------------------


def test_duplicate_request_ids_are_reported_in_row_order_not_dropped() -> None:
    ids = ["zed", "a", "zed", "b", "a", "c", "b", "zed"]  # row order is not alphabetical
    rows = [lake_row(request_id, minute) for minute, request_id in enumerate(ids)]
    outcome = check_hour(lake_table(rows))[REQUEST_ID_UNIQUE]
    assert not outcome.passed
    assert outcome.offending_request_ids == ("zed", "a", "b")
    assert outcome.metadata["duplicated_request_ids"] == 3
    assert outcome.metadata["duplicate_rows"] == 4
    assert outcome.metadata["rows"] == 8
    assert outcome.reason == f"{LABEL}: 3 request_ids occur more than once (4 extra rows)"


def test_duplicates_across_batches_are_found() -> None:
    first = lake_table([lake_row("a"), lake_row("b", 1)])
    second = lake_table([lake_row("c", 2), lake_row("a", 3)])
    outcome = check_hour(first, second)[REQUEST_ID_UNIQUE]
    assert not outcome.passed
    assert outcome.offending_request_ids == ("a",)


def test_more_than_twenty_duplicated_ids_list_the_first_twenty() -> None:
    rows = [lake_row(f"id{i:02d}", i / 2) for i in range(30)] * 2
    outcome = check_hour(lake_table(rows))[REQUEST_ID_UNIQUE]
    assert outcome.metadata["duplicated_request_ids"] == 30
    assert outcome.offending_request_ids == tuple(f"id{i:02d}" for i in range(20))


# --- start_time_in_hour --------------------------------------------------------------------


def test_rows_outside_the_hour_fail_and_the_bounds_are_half_open() -> None:
    rows = clean_rows(3)
    rows.append(lake_row("early", minute=-0.001))
    rows.append(lake_row("on-the-dot", minute=0))
    rows.append(lake_row("next-hour", minute=60))
    outcome = check_hour(lake_table(rows))[START_TIME_IN_HOUR]
    assert not outcome.passed
    assert outcome.offending_request_ids == ("early", "next-hour")
    assert outcome.metadata["rows_outside_hour"] == 2
    assert outcome.metadata["rows_before_hour"] == 1
    assert outcome.metadata["rows_after_hour"] == 1
    assert outcome.metadata["earliest_outside"] == "2026-11-01T02:59:59.940000+00:00"
    assert outcome.metadata["latest_outside"] == "2026-11-01T04:00:00+00:00"
    assert outcome.reason == (
        f"{LABEL}: 2 rows start outside [2026-11-01 03:00, 04:00) UTC "
        "(1 before it, 1 at or after its end)"
    )


def test_the_last_millisecond_of_the_hour_is_inside() -> None:
    rows = [lake_row("first", 0), lake_row("last", minute=60 - 1 / 60_000)]
    assert check_hour(lake_table(rows))[START_TIME_IN_HOUR].passed


# --- matches_source ------------------------------------------------------------------------


def test_one_row_more_than_the_source_fails() -> None:
    rows = clean_rows(5)
    source = SourceTotals(4, totals_of(rows).spend)  # same spend, one row fewer
    outcome = check_hour(lake_table(rows), source=source)[MATCHES_SOURCE]
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert outcome.metadata["row_difference"] == 1
    assert outcome.metadata["spend_difference"] == "0"
    assert outcome.metadata["source_rows"] == 4
    assert "difference +1 rows" in outcome.reason


def test_spend_off_by_a_millionth_fails() -> None:
    rows = clean_rows(5)
    exact = totals_of(rows)
    source = SourceTotals(exact.rows, exact.spend + Decimal("1e-6"))
    outcome = check_hour(lake_table(rows), source=source)[MATCHES_SOURCE]
    assert not outcome.passed
    assert outcome.metadata["row_difference"] == 0
    assert outcome.metadata["spend_difference"] == "-0.000001"
    assert outcome.metadata["lake_spend"] == "0.001125"
    assert outcome.metadata["source_spend"] == "0.001126"
    assert outcome.reason == (
        f"{LABEL}: the lake has 5 rows and 0.001125 USD but LiteLLM holds 5 rows and "
        "0.001126 USD (difference +0 rows, -0.000001 USD; tolerance 0.000000001 USD)"
    )


AWKWARD = [0.1, 0.2, 2.5e-08, 1234.5678, 0.30000000000000004, 1e-12, 0.0030850000000000005]


def test_awkward_floats_match_the_source_exactly() -> None:
    rows = [lake_row(f"r{i}", i, spend=value) for i, value in enumerate(AWKWARD)]
    source = SourceTotals(len(AWKWARD), Decimal("1235.1708850250010000405"))
    assert totals_of(rows) == source
    assert sum(AWKWARD) != float(source.spend)  # float addition drifts; the check must not
    outcome = check_hour(lake_table(rows), source=source)[MATCHES_SOURCE]
    assert outcome.passed, outcome.reason
    assert outcome.metadata["spend_difference"] == "0"
    assert outcome.metadata["lake_spend"] == "1235.1708850250010000405"


@pytest.mark.parametrize(
    ("offset", "passes"),
    [(Decimal("1e-9"), True), (Decimal("-9e-10"), True), (Decimal("1.1e-9"), False)],
)
def test_spend_tolerance_is_inclusive(offset: Decimal, passes: bool) -> None:
    rows = [lake_row(f"r{i}", i, spend=value) for i, value in enumerate(AWKWARD)]
    exact = totals_of(rows)
    source = SourceTotals(exact.rows, exact.spend + offset)
    assert check_hour(lake_table(rows), source=source)[MATCHES_SOURCE].passed is passes


def test_a_tolerance_can_be_configured() -> None:
    rows = clean_rows(3)
    exact = totals_of(rows)
    source = SourceTotals(exact.rows, exact.spend + Decimal("1e-6"))
    outcome = check_hour(lake_table(rows), source=source, spend_tolerance=Decimal("1e-5"))
    assert outcome[MATCHES_SOURCE].passed


def test_without_source_totals_the_check_is_not_judged_and_says_why() -> None:
    outcome = check_hour(lake_table(clean_rows(2)), skip_reason="the api source has no totals")
    unjudged = outcome[MATCHES_SOURCE]
    assert not unjudged.judged
    assert not unjudged.blocking  # holds nothing back
    assert unjudged.reason == f"{LABEL}: not evaluated: the api source has no totals"
    assert "source_rows" not in unjudged.metadata
    assert all(o.judged for name, o in outcome.items() if name != MATCHES_SOURCE)


def test_a_skip_reason_with_source_totals_is_a_mistake() -> None:
    checker = HourChecker(HOUR)
    with pytest.raises(ValueError, match="skip_reason"):
        checker.finish(SourceTotals(0, Decimal(0)), "why")


def test_the_checker_wants_a_whole_hour() -> None:
    with pytest.raises(ValueError, match="whole UTC hour"):
        HourChecker(HOUR + timedelta(minutes=1))
    assert HourChecker(datetime(2026, 11, 1, 3)).hour == HOUR  # naive means UTC


# --- unpriced_traffic ----------------------------------------------------------------------


def unpriced_hour(unpriced: int, priced: int, failures: int = 0) -> list[dict[str, Any]]:
    rows = [lake_row(f"p{i}", i / 100) for i in range(priced)]
    for i in range(unpriced):
        model = "ollama/llama3" if i % 3 else "custom/new-model"
        rows.append(lake_row(f"u{i}", 30 + i / 100, spend=0.0, model=model))
    # Failed requests cost nothing and are not unpriced traffic.
    rows += [lake_row(f"f{i}", 50, spend=0.0, status="failure") for i in range(failures)]
    return rows


def test_unpriced_share_above_the_threshold_warns_with_ids_and_models() -> None:
    rows = unpriced_hour(unpriced=3, priced=97, failures=50)
    # An embedding-style row: total 0 but prompt tokens, also unpriced.
    rows.append(lake_row("emb", 40, spend=0.0, total_tokens=0, completion_tokens=0))
    # Successful but no tokens at all: not unpriced.
    rows.append(
        lake_row("empty", 41, spend=0.0, prompt_tokens=0, completion_tokens=0, total_tokens=0)
    )
    outcomes = check_hour(lake_table(rows), source=totals_of(rows))
    outcome = outcomes[UNPRICED_TRAFFIC]
    assert not outcome.passed
    assert outcome.severity == "WARN"
    assert outcome.offending_request_ids == ("u0", "u1", "u2", "emb")
    assert outcome.metadata["successful_rows"] == 102
    assert outcome.metadata["unpriced_rows"] == 4
    assert outcome.metadata["unpriced_share"] == pytest.approx(4 / 102)
    assert outcome.metadata["unpriced_tokens"] == 90
    assert outcome.metadata["unpriced_models"] == (
        "ollama/llama3 (2), custom/new-model (1), openai/gpt-4o (1)"
    )
    assert "above the 1.00% threshold" in outcome.reason
    # A WARN failure does not hold the hour back.
    assert not held_back(outcomes.values())


def test_unpriced_share_below_the_threshold_passes() -> None:
    rows = unpriced_hour(unpriced=1, priced=199)
    outcome = check_hour(lake_table(rows))[UNPRICED_TRAFFIC]
    assert outcome.passed
    assert outcome.metadata["unpriced_rows"] == 1
    assert outcome.metadata["unpriced_share"] == pytest.approx(0.005)
    assert outcome.offending_request_ids == ()
    assert "within the 1.00% threshold" in outcome.reason


def test_unpriced_threshold_can_be_configured() -> None:
    rows = unpriced_hour(unpriced=1, priced=199)
    outcomes = check_hour(lake_table(rows), unpriced_share_threshold=0.001)
    assert not outcomes[UNPRICED_TRAFFIC].passed


# --- batches -------------------------------------------------------------------------------


def dirty_hour() -> list[dict[str, Any]]:
    rows = [lake_row(f"r{i:03d}", i * 0.2, spend=AWKWARD[i % len(AWKWARD)]) for i in range(300)]
    for i in range(0, 300, 7):
        rows[i]["spend"] = -0.001 * i
    for i in range(3, 300, 11):
        rows[i]["request_id"] = f"r{i - 2:03d}"
    for i in range(5, 300, 13):
        rows[i].update(spend=0.0, model=f"m{i % 4}")
    for i in range(9, 300, 17):
        rows[i]["completion_tokens"] = -1
    for i in range(2, 300, 29):
        rows[i]["request_id"] = None
    rows[1]["spend"] = math.nan
    rows[7]["row_problems"] = 'metadata.cost_breakdown.input_cost is not a number: string "n/a"'
    rows[0]["start_time"] = HOUR - timedelta(seconds=1)
    rows[-1]["start_time"] = HOUR + timedelta(hours=1)
    return rows


def test_three_batches_give_the_same_outcomes_as_one() -> None:
    rows = dirty_hour()
    table = lake_table(rows)
    source = SourceTotals(299, Decimal("12.5"))
    whole = check_hour(table, source=source)
    parts = check_hour(table.slice(0, 100), table.slice(100, 7), table.slice(107), source=source)
    assert parts == whole
    assert only_failures(whole) == set(HOUR_CHECKS)
    for outcome in whole.values():
        assert len(outcome.offending_request_ids) <= 20
    assert held_back(whole.values())
    assert {o.check for o in blocking_failures(whole.values())} == set(HOUR_CHECKS[:6])


def test_record_batches_and_empty_batches_are_accepted() -> None:
    rows = clean_rows(4)
    batches = lake_table(rows).to_batches(max_chunksize=3)
    assert len(batches) == 2
    checker = HourChecker(HOUR)
    for batch in batches:
        checker.add(batch)
    checker.add(LAKE_SCHEMA.empty_table())
    outcomes = checker.finish(totals_of(rows))
    assert all(o.passed for o in outcomes)
    assert outcomes[0].metadata["rows"] == 4


def test_finish_can_be_called_again_and_gives_the_same_answer() -> None:
    checker = HourChecker(HOUR)
    checker.add(lake_table(dirty_hour()))
    assert checker.finish(None, "no source") == checker.finish(None, "no source")


# --- late_rows -----------------------------------------------------------------------------


def _hour(h: int) -> datetime:
    return datetime(2026, 11, 1, h, tzinfo=UTC)


def test_late_rows_lists_only_the_changed_hour() -> None:
    materialized = {
        _hour(3): SourceTotals(10, Decimal("0.5")),
        _hour(4): SourceTotals(7, Decimal("0.25")),
    }
    source_now = {
        _hour(3): SourceTotals(11, Decimal("0.6")),
        _hour(4): SourceTotals(7, Decimal("0.25")),
    }
    outcome = late_rows(materialized, source_now, [_hour(3), _hour(4)])
    assert outcome.check == LATE_ROWS
    assert not outcome.passed
    assert outcome.severity == "WARN"
    assert outcome.hour == _hour(3)
    assert outcome.metadata["hours_to_rerun"] == "2026-11-01-03:00"
    assert outcome.metadata["late_hours"] == 1
    assert outcome.metadata["hours_checked"] == 2
    assert outcome.metadata["rows_added"] == 1
    assert outcome.metadata["spend_added"] == "0.1"
    assert outcome.metadata["2026-11-01-03:00"] == "10 rows, 0.5 USD -> 11 rows, 0.6 USD"
    assert "2026-11-01-04:00" not in outcome.metadata
    assert outcome.reason.startswith("2026-11-01 03:00 UTC: 1 of the 2 hours")


def test_late_rows_catches_spend_changes_beyond_tolerance_and_unmaterialized_hours() -> None:
    materialized = {
        _hour(5): SourceTotals(7, Decimal("0.25")),
        _hour(2): SourceTotals(1, Decimal("0.1")),
        _hour(1): SourceTotals(1, Decimal("0.1")),
    }
    source_now = {
        _hour(5): SourceTotals(7, Decimal("0.2500000000005")),  # within 1e-9: unchanged
        _hour(2): SourceTotals(1, Decimal("0.100001")),  # same count, more spend
        _hour(1): SourceTotals(1, Decimal("0.1")),
        _hour(3): SourceTotals(2, Decimal("0.02")),  # expected, never materialized, has rows
        _hour(7): SourceTotals(5, Decimal("1")),  # not expected yet (still open): ignored
    }
    expected = [_hour(h) for h in range(1, 7)]  # hour 4 and 6: expected, no rows anywhere
    outcome = late_rows(materialized, source_now, expected)
    assert outcome.hour == _hour(1)
    assert outcome.metadata["hours_to_rerun"] == "2026-11-01-02:00,2026-11-01-03:00"
    assert outcome.metadata["2026-11-01-03:00"] == "not materialized -> 2 rows, 0.02 USD"
    assert outcome.metadata["hours_checked"] == 6


def test_late_rows_reports_rows_that_disappeared_from_the_source() -> None:
    outcome = late_rows({_hour(3): SourceTotals(2, Decimal("0.2"))}, {}, [_hour(3)])
    assert not outcome.passed
    assert outcome.metadata["rows_added"] == -2
    assert outcome.metadata["2026-11-01-03:00"] == "2 rows, 0.2 USD -> 0 rows, 0 USD"


def test_late_rows_passes_when_nothing_changed() -> None:
    totals = {_hour(h): SourceTotals(h, Decimal(h) / 10) for h in range(3)}
    outcome = late_rows(totals, dict(totals), list(totals))
    assert outcome.passed
    assert outcome.metadata["hours_to_rerun"] == ""
    assert outcome.hour == _hour(0)
    assert "none of the 3 hours from 2026-11-01 00:00 to 2026-11-01 02:00 UTC" in outcome.reason


def test_late_rows_needs_a_window() -> None:
    with pytest.raises(ValueError, match="at least one"):
        late_rows({}, {_hour(1): SourceTotals(1, Decimal(1))}, [])


# --- daily_reconciliation ------------------------------------------------------------------

DAY = date(2026, 11, 1)
DAILY_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("date", pa.string()),
        ("api_key", pa.string()),
        ("model", pa.string()),
        ("custom_llm_provider", pa.string()),
        ("spend", pa.float64()),
        ("api_requests", pa.int64()),
    ]
)


def day_lake() -> list[dict[str, Any]]:
    """A day of lake rows over three groups; the third has no key and no provider (nulls)."""
    rows = [lake_row(f"a{i}", i * 30, spend=0.1) for i in range(10)]  # 5 hours of traffic
    rows += [lake_row(f"b{i}", i, spend=0.2, api_key=OTHER_KEY) for i in range(3)]
    rows += [lake_row("b3", 5, spend=0.0, api_key=OTHER_KEY, status="failure")]
    rows += [
        lake_row(f"c{i}", i, api_key=None, provider=None, model="x", spend=2.5e-08)
        for i in range(2)
    ]
    return rows


def daily(*rows: tuple[str, str, str, str, float, int], day: str = "2026-11-01") -> pa.Table:
    names = ["user_id", "api_key", "model", "custom_llm_provider", "spend", "api_requests"]
    return pa.Table.from_pylist(
        [dict(zip(names, row, strict=True)) | {"date": day} for row in rows], schema=DAILY_SCHEMA
    )


def clean_daily() -> pa.Table:
    """LiteLLM's view of day_lake: the first group split over two users, '' for 'none'."""
    return daily(
        ("u1", KEY, "openai/gpt-4o", "openai", 0.6000000000000001, 6),
        ("u2", KEY, "openai/gpt-4o", "openai", 0.4, 4),
        ("u3", OTHER_KEY, "openai/gpt-4o", "openai", 0.6000000000000001, 4),
        ("", "", "x", "", 5e-08, 2),
    )


def test_a_clean_day_passes() -> None:
    outcome, differences = daily_reconciliation(
        lake_table(day_lake()), clean_daily(), spend_tolerance=Decimal("1e-9"), day=DAY
    )
    assert outcome.passed, outcome.reason
    assert outcome.check == DAILY_RECONCILIATION
    assert outcome.severity == "WARN"
    assert outcome.hour == datetime(2026, 11, 1, tzinfo=UTC)
    assert differences.schema == DIFFERENCES_SCHEMA
    assert differences.num_rows == 0
    assert outcome.metadata["groups_compared"] == 3
    assert outcome.metadata["lake_requests"] == outcome.metadata["litellm_requests"] == 16
    assert outcome.metadata["lake_failed_requests"] == 1
    assert outcome.metadata["groups_only_in_lake"] == 0
    assert outcome.reason.startswith("2026-11-01 UTC: the lake matches LiteLLM_DailyUserSpend")
    assert differences_markdown(differences) == "No differences."


def test_a_request_litellm_dropped_from_spend_logs_shows_as_one_more_litellm_request() -> None:
    lake = lake_table([r for r in day_lake() if r["request_id"] != "b2"])  # the dropped duplicate
    outcome, differences = daily_reconciliation(
        lake, clean_daily(), spend_tolerance=Decimal("1e-9"), day=DAY
    )
    assert not outcome.passed
    assert outcome.metadata["groups_differing"] == 1
    assert outcome.metadata["lake_requests"] == 15
    assert outcome.metadata["litellm_requests"] == 16
    assert differences.to_pylist() == [
        {
            "api_key": OTHER_KEY,
            "model": "openai/gpt-4o",
            "provider": "openai",
            "lake_requests": 3,
            "litellm_requests": 4,
            "lake_spend": Decimal("0.4"),
            "litellm_spend": Decimal("0.6000000000000001"),
            "spend_difference": Decimal("-0.2000000000000001"),
        }
    ]
    assert "1 of 3 (api_key, model, provider) groups differ" in outcome.reason


def test_a_double_counted_row_shows_as_one_more_lake_request() -> None:
    rows = day_lake()
    rows.append(lake_row("a0-again", 1, spend=0.1))
    rows.append(lake_row("c-again", 1, api_key=None, provider=None, model="x", spend=2.5e-08))
    outcome, differences = daily_reconciliation(
        lake_table(rows), clean_daily(), spend_tolerance=Decimal("1e-9"), day=DAY
    )
    assert not outcome.passed
    found = {
        (row["api_key"], row["lake_requests"], row["litellm_requests"])
        for row in differences.to_pylist()
    }
    assert found == {(KEY, 11, 10), ("", 3, 2)}
    # Largest spend difference first.
    assert differences.column("api_key").to_pylist() == [KEY, ""]
    assert differences.column("spend_difference").to_pylist() == [
        Decimal("0.0999999999999999"),
        Decimal("2.5e-8"),
    ]
    markdown = differences_markdown(differences)
    lines = markdown.splitlines()
    assert lines[0].startswith("| api_key | model | provider | lake requests |")
    assert lines[2] == (
        "| 4a68fbf9a6ec… | openai/gpt-4o | openai | 11 | 10 | 1.1 | 1.0000000000000001 "
        "| +0.0999999999999999 |"
    )
    assert lines[3] == "| (none) | x | (none) | 3 | 2 | 0.000000075 | 0.00000005 | +0.000000025 |"
    assert differences_markdown(differences, limit=1).splitlines()[-1] == (
        "_1 more groups not shown._"
    )


def test_spend_differences_within_tolerance_pass_and_beyond_fail() -> None:
    lake = lake_table(day_lake())
    nudged = clean_daily().to_pylist()
    nudged[1]["spend"] = 0.4000000005
    table = pa.Table.from_pylist(nudged, schema=DAILY_SCHEMA)
    assert daily_reconciliation(lake, table, spend_tolerance=Decimal("1e-9"), day=DAY)[0].passed
    outcome, differences = daily_reconciliation(
        lake, table, spend_tolerance=Decimal("1e-10"), day=DAY
    )
    assert not outcome.passed
    assert differences.column("spend_difference").to_pylist() == [Decimal("-5.000001e-10")]


def test_groups_on_one_side_only_and_other_days_are_handled() -> None:
    extra = clean_daily().to_pylist()
    extra.append(
        {
            "user_id": "u9",
            "date": "2026-11-01",
            "api_key": "k",
            "model": "m",
            "custom_llm_provider": "p",
            "spend": 1.0,
            "api_requests": 1,
        }
    )
    extra.append(dict(extra[0], date="2026-10-31"))  # another day: ignored
    lake_rows = [*day_lake(), lake_row("tomorrow", 60 * 22)]  # 2026-11-02 01:00: ignored
    outcome, differences = daily_reconciliation(
        lake_table(lake_rows),
        pa.Table.from_pylist(extra, schema=DAILY_SCHEMA),
        spend_tolerance=Decimal("1e-9"),
        day=DAY,
    )
    assert not outcome.passed
    assert outcome.metadata["groups_only_in_litellm"] == 1
    assert outcome.metadata["groups_only_in_lake"] == 0
    assert differences.to_pylist()[0]["lake_requests"] == 0
    assert differences.to_pylist()[0]["litellm_spend"] == Decimal(1)
    assert differences.num_rows == 1
