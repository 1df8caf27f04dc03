"""Data-quality checks that guard each UTC hour of spend logs before it may go to CloudZero.

Plain Python over Arrow, no Dagster: the ``defs`` layer turns each :class:`CheckOutcome` into an
``AssetCheckResult``. Three kinds of check live here:

* :class:`HourChecker` is fed one hour's lake rows batch by batch (the lake writer streams hours in
  bounded batches) and keeps only counts, sums, a few offending ids and the ``request_id`` column
  that uniqueness needs. Its ERROR outcomes hold the hour back (:func:`held_back`).
* :func:`late_rows` compares what was materialized with what the source holds now, so hours that
  LiteLLM wrote late (its writer flushes in batches, possibly through Redis) get re-run.
* :func:`daily_reconciliation` compares a UTC day of the lake with ``LiteLLM_DailyUserSpend``,
  which LiteLLM maintains separately and which therefore exposes LiteLLM's own losses (rows dropped
  on a duplicate provider ``request_id``) and double counting.

Money is compared as exact decimals (:mod:`cz_pipeline.lib.money`), never as float sums whose result
depends on batch boundaries and summation order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.hours import HOUR, as_utc, floor_hour, partition_key
from cz_pipeline.lib.money import EXACT as _EXACT
from cz_pipeline.lib.money import MAX_MONEY as MAX_SUMMABLE_SPEND
from cz_pipeline.lib.money import MONEY_DECIMAL as SPEND_DECIMAL
from cz_pipeline.lib.money import exact_money as _summable
from cz_pipeline.lib.money import money_decimals as _spend_decimals
from cz_pipeline.lib.money import money_sum
from cz_pipeline.lib.money import plain as plain_decimal
from cz_pipeline.lib.spend_log_schema import LAKE_SCHEMA

Severity = Literal["ERROR", "WARN"]
MetadataValue = int | float | str

REQUIRED_FIELDS = "required_fields"
START_TIME_IN_HOUR = "start_time_in_hour"
REQUEST_ID_UNIQUE = "request_id_unique"
SPEND_AND_TOKENS_VALID = "spend_and_tokens_valid"
VALUES_READABLE = "values_readable"
MATCHES_SOURCE = "matches_source"
UNPRICED_TRAFFIC = "unpriced_traffic"
LATE_ROWS = "late_rows"
DAILY_RECONCILIATION = "daily_reconciliation"

# The outcomes HourChecker.finish returns, in this order; the first six block the hour.
HOUR_CHECKS: tuple[str, ...] = (
    REQUIRED_FIELDS,
    START_TIME_IN_HOUR,
    REQUEST_ID_UNIQUE,
    SPEND_AND_TOKENS_VALID,
    VALUES_READABLE,
    MATCHES_SOURCE,
    UNPRICED_TRAFFIC,
)
SEVERITIES: dict[str, Severity] = {
    REQUIRED_FIELDS: "ERROR",
    START_TIME_IN_HOUR: "ERROR",
    REQUEST_ID_UNIQUE: "ERROR",
    SPEND_AND_TOKENS_VALID: "ERROR",
    VALUES_READABLE: "ERROR",
    MATCHES_SOURCE: "ERROR",
    UNPRICED_TRAFFIC: "WARN",
    LATE_ROWS: "WARN",
    DAILY_RECONCILIATION: "WARN",
}

DEFAULT_SPEND_TOLERANCE = Decimal("1e-9")
DEFAULT_UNPRICED_SHARE_THRESHOLD = 0.01
MAX_OFFENDING_IDS = 20
_PROBLEMS_IN_REASON = 3

REQUIRED_COLUMNS: tuple[str, ...] = (
    "request_id",
    "start_time",
    "spend",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)
TOKEN_COLUMNS: tuple[str, ...] = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
)
_UNPRICED_COLUMNS = ("status", "spend", "prompt_tokens", "total_tokens", "model")

DIFFERENCES_SCHEMA = pa.schema(
    [
        pa.field("api_key", pa.string()),
        pa.field("model", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("lake_requests", pa.int64()),
        pa.field("litellm_requests", pa.int64()),
        pa.field("lake_spend", SPEND_DECIMAL),
        pa.field("litellm_spend", SPEND_DECIMAL),
        pa.field("spend_difference", SPEND_DECIMAL),
    ]
)
_GROUP_KEYS = ("api_key", "model", "provider")


@dataclass(frozen=True)
class CheckOutcome:
    """The verdict of one check on one hour (or day, or lookback window), ready to publish."""

    check: str
    hour: datetime
    passed: bool
    severity: Severity
    reason: str
    offending_request_ids: tuple[str, ...] = ()
    metadata: dict[str, MetadataValue] = field(default_factory=dict, hash=False)
    # False when the check could not judge (no source totals, no complete day): never a pass.
    judged: bool = True

    @property
    def blocking(self) -> bool:
        """True when this outcome must keep the hour away from CloudZero."""
        return not self.passed and self.severity == "ERROR"


@dataclass(frozen=True)
class SourceTotals:
    """What LiteLLM holds for one hour: its row count and the exact decimal sum of ``spend``."""

    rows: int
    spend: Decimal


def blocking_failures(outcomes: Iterable[CheckOutcome]) -> list[CheckOutcome]:
    """The failed ERROR outcomes: the reasons an hour is held back."""
    return [outcome for outcome in outcomes if outcome.blocking]


def held_back(outcomes: Iterable[CheckOutcome]) -> bool:
    """An hour goes on to CloudZero only when none of its ERROR checks failed."""
    return bool(blocking_failures(outcomes))


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _whole_hour(moment: datetime) -> datetime:
    hour = as_utc(moment)
    if hour != floor_hour(hour):
        raise ValueError(f"{moment.isoformat()} is not a whole UTC hour")
    return hour


def _hour_label(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d %H:%M} UTC"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _signed(value: Decimal) -> str:
    text = plain_decimal(value)
    return text if text.startswith("-") or text == "0" else "+" + text


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    """Number of true values in a boolean mask (nulls do not count)."""
    return int(pc.sum(mask).as_py() or 0)


def _any(masks: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array | pa.ChunkedArray:
    return pc.fill_null(reduce(pc.or_kleene, masks), False)


def _first_ids(rows: pa.Table, mask: pa.Array | pa.ChunkedArray, limit: int) -> list[str]:
    """Up to ``limit`` request ids of the rows selected by ``mask``, in row order."""
    if limit <= 0 or "request_id" not in rows.column_names:
        return []
    ids = rows.column("request_id")
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        return []
    picked = pc.drop_null(pc.filter(ids, pc.fill_null(mask, False)))
    return [str(value) for value in picked.slice(0, limit).to_pylist()]


def _type_problems(rows: pa.Table, names: Iterable[str]) -> list[str]:
    """How ``rows`` departs from LAKE_SCHEMA's types for ``names`` (empty when it does not)."""
    problems = []
    for name in names:
        expected = LAKE_SCHEMA.field(name).type
        if name not in rows.column_names:
            problems.append(f"{name} is missing")
        elif rows.schema.field(name).type != expected:
            problems.append(f"{name} is {rows.schema.field(name).type}, expected {expected}")
    return problems


def _within(difference: Decimal, tolerance: Decimal) -> bool:
    return _EXACT.abs(difference) <= tolerance


# ---------------------------------------------------------------------------------------------
# Hourly checks
# ---------------------------------------------------------------------------------------------


class HourChecker:
    """Runs the hourly checks over one UTC hour's lake rows, fed batch by batch.

    Memory stays bounded by the hour's ``request_id`` column (uniqueness needs every id) plus
    counts, exact sums and at most 20 offending ids per check; each batch is checked with
    ``pyarrow.compute`` only. A batch whose columns lack LAKE_SCHEMA's types is not guessed at:
    the checks that need those columns fail, saying how many rows they could not read.
    """

    def __init__(
        self,
        hour: datetime,
        *,
        spend_tolerance: Decimal = DEFAULT_SPEND_TOLERANCE,
        unpriced_share_threshold: float = DEFAULT_UNPRICED_SHARE_THRESHOLD,
    ) -> None:
        self.hour = _whole_hour(hour)
        self.spend_tolerance = spend_tolerance
        self.unpriced_share_threshold = unpriced_share_threshold
        self._label = _hour_label(self.hour)
        self._start = pa.scalar(self.hour, LAKE_SCHEMA.field("start_time").type)
        self._end = pa.scalar(self.hour + HOUR, LAKE_SCHEMA.field("start_time").type)
        self._rows = 0
        self._ids: dict[str, list[str]] = {name: [] for name in HOUR_CHECKS}
        # Rows a check could not read because of a column type, and why.
        self._unread: Counter[str] = Counter()
        self._unread_why: dict[str, str] = {}
        # required_fields
        self._type_mismatches: dict[str, str] = {}
        self._nulls: Counter[str] = Counter()
        self._rows_with_nulls = 0
        # start_time_in_hour
        self._before = 0
        self._after = 0
        self._earliest_outside: datetime | None = None
        self._latest_outside: datetime | None = None
        # request_id_unique
        self._request_ids: list[pa.Array] = []
        # spend_and_tokens_valid
        self._invalid_rows = 0
        self._spend_problems: Counter[str] = Counter()
        self._negative_tokens: Counter[str] = Counter()
        self._negative_spend_total = Decimal(0)
        # values_readable: rows a source could not read in full, and (request id, why) of the first
        self._problem_rows = 0
        self._problems: list[tuple[str, str]] = []
        # matches_source
        self._spend = Decimal(0)
        self._unsummable = 0
        # unpriced_traffic
        self._successful = 0
        self._unpriced = 0
        self._unpriced_tokens = 0
        self._unpriced_models: Counter[str] = Counter()

    @property
    def lake_totals(self) -> SourceTotals:
        """Rows and exact spend fed so far: what the lake holds for the hour."""
        return SourceTotals(self._rows, self._spend)

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        """Check one batch of this hour's lake rows."""
        if isinstance(rows, pa.RecordBatch):
            rows = pa.Table.from_batches([rows])
        self._add_required_fields(rows)
        if not rows.num_rows:
            return
        self._rows += rows.num_rows
        self._add_start_times(rows)
        self._add_request_ids(rows)
        self._add_spend_and_tokens(rows)
        self._add_row_problems(rows)
        self._add_source_sum(rows)
        self._add_unpriced(rows)

    def finish(
        self, source_totals: SourceTotals | None, skip_reason: str | None = None
    ) -> list[CheckOutcome]:
        """One outcome per check, in ``HOUR_CHECKS`` order, passed or not.

        ``source_totals`` is what LiteLLM holds for the hour. When the source cannot say,
        pass ``None`` and ``skip_reason`` (why, e.g. "the api source has no aggregate to
        reconcile with"); ``matches_source`` is then not judged (``judged=False``), which
        holds nothing back but is never shown as a pass.
        """
        return [
            self._required_fields(),
            self._start_time_in_hour(),
            self._request_id_unique(),
            self._spend_and_tokens_valid(),
            self._values_readable(),
            self._matches_source(source_totals, skip_reason),
            self._unpriced_traffic(),
        ]

    # -- feeding ---------------------------------------------------------------------------

    def _readable(self, check: str, rows: pa.Table, names: Iterable[str]) -> bool:
        problems = _type_problems(rows, names)
        if problems:
            self._unread[check] += rows.num_rows
            self._unread_why.setdefault(check, "; ".join(problems))
        return not problems

    def _keep_ids(self, check: str, rows: pa.Table, mask: pa.Array | pa.ChunkedArray) -> None:
        kept = self._ids[check]
        kept.extend(_first_ids(rows, mask, MAX_OFFENDING_IDS - len(kept)))

    def _add_required_fields(self, rows: pa.Table) -> None:
        for name in REQUIRED_COLUMNS:
            problems = _type_problems(rows, [name])
            if problems:
                self._type_mismatches.setdefault(name, problems[0])
        present = [name for name in REQUIRED_COLUMNS if name in rows.column_names]
        if not rows.num_rows or not present:
            return
        for name in present:
            self._nulls[name] += rows.column(name).null_count
        missing = _any([pc.is_null(rows.column(name)) for name in present])
        self._rows_with_nulls += _count(missing)
        self._keep_ids(REQUIRED_FIELDS, rows, missing)

    def _add_start_times(self, rows: pa.Table) -> None:
        if not self._readable(START_TIME_IN_HOUR, rows, ["start_time"]):
            return
        start_time = rows.column("start_time")
        before = pc.less(start_time, self._start)
        after = pc.greater_equal(start_time, self._end)
        outside = _any([before, after])
        if not _count(outside):
            return
        self._before += _count(before)
        self._after += _count(after)
        extremes = pc.min_max(pc.filter(start_time, outside)).as_py()
        earliest, latest = as_utc(extremes["min"]), as_utc(extremes["max"])
        if self._earliest_outside is None or earliest < self._earliest_outside:
            self._earliest_outside = earliest
        if self._latest_outside is None or latest > self._latest_outside:
            self._latest_outside = latest
        self._keep_ids(START_TIME_IN_HOUR, rows, outside)

    def _add_request_ids(self, rows: pa.Table) -> None:
        if not self._readable(REQUEST_ID_UNIQUE, rows, ["request_id"]):
            return
        # A copy: a column imported from the source keeps its whole batch alive otherwise.
        ids = rows.column("request_id")
        self._request_ids.append(pa.concat_arrays(ids.chunks) if ids.num_chunks else ids)
        if len(self._request_ids) >= 32:
            # Copy into one array: keeps the chunk list short and releases the parent buffers
            # that slices of larger batches would otherwise keep alive.
            self._request_ids = [pa.concat_arrays(self._request_ids)]

    def _add_spend_and_tokens(self, rows: pa.Table) -> None:
        if not self._readable(SPEND_AND_TOKENS_VALID, rows, ("spend", *TOKEN_COLUMNS)):
            return
        spend = rows.column("spend")
        finite = pc.is_finite(spend)
        categories = {
            "nan": pc.is_nan(spend),
            "infinite": pc.is_inf(spend),
            "negative": pc.and_(finite, pc.less(spend, 0.0)),
            "too_large": pc.and_(finite, pc.greater_equal(pc.abs(spend), MAX_SUMMABLE_SPEND)),
        }
        negative_tokens = {name: pc.less(rows.column(name), 0) for name in TOKEN_COLUMNS}
        for category, mask in categories.items():
            self._spend_problems[category] += _count(mask)
        for name, mask in negative_tokens.items():
            self._negative_tokens[name] += _count(mask)
        invalid = _any([*categories.values(), *negative_tokens.values()])
        if not _count(invalid):
            return
        self._invalid_rows += _count(invalid)
        summable_negative = pc.and_(categories["negative"], _summable(spend))
        negative_spend = pc.filter(spend, pc.fill_null(summable_negative, False))
        self._negative_spend_total = _EXACT.add(
            self._negative_spend_total, money_sum(negative_spend)
        )
        self._keep_ids(SPEND_AND_TOKENS_VALID, rows, invalid)

    def _add_row_problems(self, rows: pa.Table) -> None:
        if not self._readable(VALUES_READABLE, rows, ["row_problems"]):
            return
        problems = rows.column("row_problems")
        if problems.null_count == len(problems):
            return
        found = pc.is_valid(problems)
        self._problem_rows += _count(found)
        room = MAX_OFFENDING_IDS - len(self._problems)
        if room > 0:
            picked = rows.select(["request_id", "row_problems"]).filter(found).slice(0, room)
            self._problems += [
                (str(request_id), str(problem))
                for request_id, problem in zip(
                    picked.column("request_id").to_pylist(),
                    picked.column("row_problems").to_pylist(),
                    strict=True,
                )
            ]
        self._keep_ids(VALUES_READABLE, rows, found)

    def _add_source_sum(self, rows: pa.Table) -> None:
        if not self._readable(MATCHES_SOURCE, rows, ["spend"]):
            return
        spend = rows.column("spend")
        summable = _summable(spend)
        self._unsummable += _count(pc.invert(summable))
        self._spend = _EXACT.add(self._spend, money_sum(pc.filter(spend, summable)))

    def _add_unpriced(self, rows: pa.Table) -> None:
        if not self._readable(UNPRICED_TRAFFIC, rows, _UNPRICED_COLUMNS):
            return
        successful = pc.fill_null(pc.equal(rows.column("status"), "success"), False)
        used_tokens = _any(
            [
                pc.greater(rows.column("total_tokens"), 0),
                pc.greater(rows.column("prompt_tokens"), 0),
            ]
        )
        free = pc.fill_null(pc.equal(rows.column("spend"), 0.0), False)
        # A cache hit costs nothing by design; it is not unpriced traffic.
        if "cache_hit" in rows.column_names:
            free = pc.and_(free, pc.invert(pc.fill_null(rows.column("cache_hit"), False)))
        unpriced = pc.and_(pc.and_(successful, used_tokens), free)
        self._successful += _count(successful)
        count = _count(unpriced)
        if not count:
            return
        self._unpriced += count
        self._unpriced_tokens += int(
            pc.sum(pc.filter(rows.column("total_tokens"), unpriced)).as_py() or 0
        )
        models = pc.value_counts(pc.fill_null(pc.filter(rows.column("model"), unpriced), "?"))
        for model, n in zip(
            models.field("values").to_pylist(), models.field("counts").to_pylist(), strict=True
        ):
            self._unpriced_models[model] += n
        self._keep_ids(UNPRICED_TRAFFIC, rows, unpriced)

    # -- outcomes --------------------------------------------------------------------------

    def _outcome(
        self,
        check: str,
        passed: bool,
        reason: str,
        metadata: dict[str, MetadataValue],
        *,
        judged: bool = True,
    ) -> CheckOutcome:
        return CheckOutcome(
            check=check,
            hour=self.hour,
            passed=passed,
            severity=SEVERITIES[check],
            reason=f"{self._label}: {reason}",
            offending_request_ids=() if passed else tuple(self._ids[check]),
            metadata={"rows": self._rows, **metadata},
            judged=judged,
        )

    def _unread_outcome(
        self, check: str, reason: str, metadata: dict[str, MetadataValue]
    ) -> CheckOutcome | None:
        """A failure when part of the hour could not be read for ``check``; None otherwise."""
        unread = self._unread[check]
        if not unread:
            return None
        why = self._unread_why[check]
        return self._outcome(
            check,
            False,
            f"could not check {_plural(unread, 'row')} ({why}); in the others, {reason}",
            {**metadata, "unchecked_rows": unread, "unchecked_because": why},
        )

    def _required_fields(self) -> CheckOutcome:
        metadata: dict[str, MetadataValue] = {
            "rows_with_missing_values": self._rows_with_nulls,
            **{f"null_{name}": self._nulls[name] for name in REQUIRED_COLUMNS},
            "type_mismatches": "; ".join(self._type_mismatches.values()),
        }
        problems = []
        if self._rows_with_nulls:
            nulls = ", ".join(
                f"{self._nulls[name]:,} null {name}"
                for name in REQUIRED_COLUMNS
                if self._nulls[name]
            )
            problems.append(f"{_plural(self._rows_with_nulls, 'row')} lack a value ({nulls})")
        if self._type_mismatches:
            problems.append("wrong column types: " + "; ".join(self._type_mismatches.values()))
        if problems:
            return self._outcome(REQUIRED_FIELDS, False, "; ".join(problems), metadata)
        return self._outcome(
            REQUIRED_FIELDS,
            True,
            f"all {_plural(self._rows, 'row')} have request_id, start_time, spend and token "
            "counts, with the lake's types",
            metadata,
        )

    def _start_time_in_hour(self) -> CheckOutcome:
        window = f"[{self.hour:%Y-%m-%d %H:%M}, {self.hour + HOUR:%H:%M}) UTC"
        outside = self._before + self._after
        metadata: dict[str, MetadataValue] = {
            "rows_outside_hour": outside,
            "rows_before_hour": self._before,
            "rows_after_hour": self._after,
            "earliest_outside": self._earliest_outside.isoformat()
            if self._earliest_outside
            else "",
            "latest_outside": self._latest_outside.isoformat() if self._latest_outside else "",
        }
        reason = (
            f"{_plural(outside, 'row')} start outside {window} "
            f"({self._before:,} before it, {self._after:,} at or after its end)"
            if outside
            else f"every start_time is within {window}"
        )
        unread = self._unread_outcome(START_TIME_IN_HOUR, reason, metadata)
        return unread or self._outcome(START_TIME_IN_HOUR, not outside, reason, metadata)

    def _request_id_unique(self) -> CheckOutcome:
        duplicated_ids, extra_rows, examples = self._duplicates()
        metadata: dict[str, MetadataValue] = {
            "duplicated_request_ids": duplicated_ids,
            "duplicate_rows": extra_rows,
        }
        self._ids[REQUEST_ID_UNIQUE] = examples
        reason = (
            f"{_plural(duplicated_ids, 'request_id')} occur more than once "
            f"({_plural(extra_rows, 'extra row')})"
            if duplicated_ids
            else "no request_id occurs twice"
        )
        unread = self._unread_outcome(REQUEST_ID_UNIQUE, reason, metadata)
        return unread or self._outcome(REQUEST_ID_UNIQUE, not duplicated_ids, reason, metadata)

    def _duplicates(self) -> tuple[int, int, list[str]]:
        """(repeated ids, rows beyond each id's first, the first 20 repeated ids in row order)."""
        if not self._request_ids:
            return 0, 0, []
        ids = pa.chunked_array(self._request_ids, self._request_ids[0].type)
        # Sorting and comparing neighbours costs a quarter of the memory of grouping every id;
        # group only to report duplicates in row order, when there are some.
        present = pc.drop_null(ids)
        if len(present) < 2:
            return 0, 0, []
        ordered = pc.take(present, pc.sort_indices(present)).combine_chunks()
        neighbours_equal = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
        del ordered
        if not pc.any(neighbours_equal).as_py():
            return 0, 0, []
        positions = pa.array(range(len(ids)), pa.int64())
        table = pa.table({"request_id": ids, "position": positions})
        table = table.filter(pc.is_valid(table.column("request_id")))
        groups = table.group_by("request_id", use_threads=False).aggregate(
            [("position", "min"), ([], "count_all")]
        )
        repeated = groups.filter(pc.greater(groups.column("count_all"), 1))
        if not repeated.num_rows:
            return 0, 0, []
        extra = int(pc.sum(repeated.column("count_all")).as_py()) - repeated.num_rows
        first = repeated.sort_by("position_min").slice(0, MAX_OFFENDING_IDS)
        return repeated.num_rows, extra, [str(v) for v in first.column("request_id").to_pylist()]

    def _spend_and_tokens_valid(self) -> CheckOutcome:
        metadata: dict[str, MetadataValue] = {
            "invalid_rows": self._invalid_rows,
            "negative_spend_rows": self._spend_problems["negative"],
            "nan_spend_rows": self._spend_problems["nan"],
            "infinite_spend_rows": self._spend_problems["infinite"],
            "too_large_spend_rows": self._spend_problems["too_large"],
            "negative_spend_total": plain_decimal(self._negative_spend_total),
            **{f"negative_{name}_rows": self._negative_tokens[name] for name in TOKEN_COLUMNS},
        }
        labels = {
            "negative": "negative spend",
            "nan": "NaN spend",
            "infinite": "infinite spend",
            "too_large": f"spend of {MAX_SUMMABLE_SPEND:g} USD or more in magnitude",
        }
        problems = [
            f"{_plural(self._spend_problems[key], 'row')} with {label}"
            for key, label in labels.items()
            if self._spend_problems[key]
        ]
        problems += [
            f"{_plural(self._negative_tokens[name], 'row')} with negative {name}"
            for name in TOKEN_COLUMNS
            if self._negative_tokens[name]
        ]
        reason = (
            ", ".join(problems)
            if problems
            else "spend is finite and non-negative and token counts are non-negative in every row"
        )
        unread = self._unread_outcome(SPEND_AND_TOKENS_VALID, reason, metadata)
        return unread or self._outcome(SPEND_AND_TOKENS_VALID, not problems, reason, metadata)

    def _values_readable(self) -> CheckOutcome:
        listed = [f"request {request_id}: {problem}" for request_id, problem in self._problems]
        metadata: dict[str, MetadataValue] = {
            "rows_with_problems": self._problem_rows,
            "problems": "\n".join(listed),
        }
        if not self._problem_rows:
            reason = (
                "every row's metadata is a JSON object whose cost and token fields are numbers "
                "in range"
            )
            unread = self._unread_outcome(VALUES_READABLE, reason, metadata)
            return unread or self._outcome(VALUES_READABLE, True, reason, metadata)
        shown = "; ".join(listed[:_PROBLEMS_IN_REASON])
        more = self._problem_rows - min(len(listed), _PROBLEMS_IN_REASON)
        reason = (
            f"{_plural(self._problem_rows, 'row')} hold values LiteLLM does not write, so they "
            f"cannot be read in full ({shown}{f'; and {more:,} more' if more else ''}); the rows "
            "are kept, the hour is held back"
        )
        unread = self._unread_outcome(VALUES_READABLE, reason, metadata)
        return unread or self._outcome(VALUES_READABLE, False, reason, metadata)

    def _matches_source(
        self, source_totals: SourceTotals | None, skip_reason: str | None
    ) -> CheckOutcome:
        metadata: dict[str, MetadataValue] = {
            "lake_rows": self._rows,
            "lake_spend": plain_decimal(self._spend),
            "lake_unsummable_spend_rows": self._unsummable,
            "spend_tolerance": plain_decimal(self.spend_tolerance),
        }
        if source_totals is None:
            why = skip_reason or "the source gave no aggregate to reconcile with"
            return self._outcome(
                MATCHES_SOURCE, True, f"not evaluated: {why}", metadata, judged=False
            )
        if skip_reason is not None:
            raise ValueError("pass skip_reason only when there are no source totals")
        row_difference = self._rows - source_totals.rows
        spend_difference = _EXACT.subtract(self._spend, source_totals.spend)
        metadata |= {
            "source_rows": source_totals.rows,
            "source_spend": plain_decimal(source_totals.spend),
            "row_difference": row_difference,
            "spend_difference": plain_decimal(spend_difference),
        }
        lake = f"the lake has {_plural(self._rows, 'row')} and {plain_decimal(self._spend)} USD"
        source = (
            f"LiteLLM holds {_plural(source_totals.rows, 'row')} and "
            f"{plain_decimal(source_totals.spend)} USD"
        )
        if self._unsummable:
            reason = (
                f"{_plural(self._unsummable, 'row')} have spend that cannot be summed exactly "
                f"(NaN, infinite or {MAX_SUMMABLE_SPEND:g} USD or more), so the hour cannot be "
                f"reconciled; {source}"
            )
            return self._outcome(MATCHES_SOURCE, False, reason, metadata)
        if not source_totals.spend.is_finite():
            reason = f"LiteLLM's spend sum is {source_totals.spend}, so it cannot be reconciled"
            return self._outcome(MATCHES_SOURCE, False, reason, metadata)
        passed = row_difference == 0 and _within(spend_difference, self.spend_tolerance)
        if passed:
            reason = (
                f"{lake}, as LiteLLM does (spend within {plain_decimal(self.spend_tolerance)} USD)"
            )
        else:
            reason = (
                f"{lake} but {source} (difference {row_difference:+,} rows, "
                f"{_signed(spend_difference)} USD; "
                f"tolerance {plain_decimal(self.spend_tolerance)} USD)"
            )
        unread = self._unread_outcome(MATCHES_SOURCE, reason, metadata)
        return unread or self._outcome(MATCHES_SOURCE, passed, reason, metadata)

    def _unpriced_traffic(self) -> CheckOutcome:
        share = self._unpriced / self._successful if self._successful else 0.0
        models = sorted(self._unpriced_models.items(), key=lambda item: (-item[1], item[0]))
        metadata: dict[str, MetadataValue] = {
            "successful_rows": self._successful,
            "unpriced_rows": self._unpriced,
            "unpriced_share": share,
            "unpriced_share_threshold": self.unpriced_share_threshold,
            "unpriced_tokens": self._unpriced_tokens,
            "unpriced_models": ", ".join(f"{model} ({n:,})" for model, n in models),
        }
        passed = share <= self.unpriced_share_threshold
        counted = (
            f"{self._unpriced:,} of {_plural(self._successful, 'successful request')} "
            f"({share:.2%}) used tokens but cost 0"
        )
        if passed:
            reason = f"{counted}, within the {self.unpriced_share_threshold:.2%} threshold"
        else:
            names = ", ".join(model for model, _ in models[:5])
            more = f" and {len(models) - 5} more" if len(models) > 5 else ""
            reason = (
                f"{counted}, above the {self.unpriced_share_threshold:.2%} threshold "
                f"(models: {names}{more}); LiteLLM's price map probably lacks them"
            )
        unread = self._unread_outcome(UNPRICED_TRAFFIC, reason, metadata)
        return unread or self._outcome(UNPRICED_TRAFFIC, passed, reason, metadata)


# ---------------------------------------------------------------------------------------------
# Late rows
# ---------------------------------------------------------------------------------------------


def _totals_text(totals: SourceTotals | None) -> str:
    if totals is None:
        return "not materialized"
    return f"{_plural(totals.rows, 'row')}, {plain_decimal(totals.spend)} USD"


def late_rows(
    materialized: Mapping[datetime, SourceTotals],
    source_now: Mapping[datetime, SourceTotals],
    expected_hours: Iterable[datetime] = (),
    *,
    spend_tolerance: Decimal = DEFAULT_SPEND_TOLERANCE,
) -> CheckOutcome:
    """Which hours of a lookback window changed at the source after they were materialized.

    LiteLLM writes spend logs in delayed batches, so an hour extracted soon after it closed may
    since have grown. ``materialized`` holds each materialized hour's totals as extracted,
    ``source_now`` the source's totals now (an hour absent there has no rows), and
    ``expected_hours`` the window's hours that should be materialized by now: those never
    materialized count when the source has rows for them. Every materialized hour is compared,
    so a source that lost rows (retention, restore) shows up too, with before/after in the
    metadata for a person to judge before re-running.
    """
    done = {_whole_hour(hour): totals for hour, totals in materialized.items()}
    now = {_whole_hour(hour): totals for hour, totals in source_now.items()}
    hours = sorted({_whole_hour(hour) for hour in expected_hours} | set(done))
    if not hours:
        raise ValueError("late_rows needs at least one expected or materialized hour")
    nothing = SourceTotals(0, Decimal(0))
    late: list[tuple[datetime, SourceTotals | None, SourceTotals]] = []
    for hour in hours:
        before, after = done.get(hour), now.get(hour, nothing)
        if before is None:
            changed = after.rows != 0 or not after.spend.is_zero()
        else:
            spend_difference = _EXACT.subtract(after.spend, before.spend)
            changed = before.rows != after.rows or not _within(spend_difference, spend_tolerance)
        if changed:
            late.append((hour, before, after))

    first, last = hours[0], hours[-1]
    span = f"{_plural(len(hours), 'hour')} from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    rerun = [partition_key(hour) for hour, _, _ in late]
    rows_added = sum(after.rows - (before.rows if before else 0) for _, before, after in late)
    spend_added = reduce(
        _EXACT.add,
        (_EXACT.subtract(after.spend, before.spend if before else 0) for _, before, after in late),
        Decimal(0),
    )
    metadata: dict[str, MetadataValue] = {
        "hours_checked": len(hours),
        "late_hours": len(late),
        "hours_to_rerun": ",".join(rerun),
        "rows_added": rows_added,
        "spend_added": plain_decimal(spend_added),
        "spend_tolerance": plain_decimal(spend_tolerance),
    }
    for hour, before, after in late:
        metadata[partition_key(hour)] = f"{_totals_text(before)} -> {_totals_text(after)}"
    if late:
        shown = ", ".join(f"{hour:%Y-%m-%d %H:%M}" for hour, _, _ in late[:5])
        more = f" and {len(late) - 5} more" if len(late) > 5 else ""
        reason = (
            f"{_hour_label(first)}: {len(late):,} of the {span} changed at the source after "
            f"materialization or were never materialized ({shown}{more}); re-run them"
        )
    else:
        reason = (
            f"{_hour_label(first)}: none of the {span} changed at the source since materialized"
        )
    return CheckOutcome(
        check=LATE_ROWS,
        hour=first,
        passed=not late,
        severity=SEVERITIES[LATE_ROWS],
        reason=reason,
        metadata=metadata,
    )


# ---------------------------------------------------------------------------------------------
# Daily reconciliation with LiteLLM_DailyUserSpend
# ---------------------------------------------------------------------------------------------


def _key(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Join key: the lake has nulls where LiteLLM's daily tables have '' (or NULL)."""
    return pc.fill_null(values.cast(pa.string()), "")


@dataclass
class _Groups:
    """Per (api_key, model, provider): requests and exact spend, plus rows left out of sums."""

    totals: dict[tuple[str, str, str], tuple[int, Decimal]]
    unsummable: int
    requests: int
    spend: Decimal


def _grouped(
    keys: Sequence[pa.Array | pa.ChunkedArray],
    spend: pa.Array | pa.ChunkedArray,
    requests: pa.Array | pa.ChunkedArray,
) -> _Groups:
    spend = spend.cast(pa.float64())
    summable = pc.fill_null(_summable(spend), False)
    null_spend = pa.scalar(None, pa.float64())
    table = pa.table(
        {
            **{name: _key(column) for name, column in zip(_GROUP_KEYS, keys, strict=True)},
            "spend": _spend_decimals(pc.if_else(summable, spend, null_spend)),
            "requests": pc.fill_null(requests.cast(pa.int64()), 0),
        }
    )
    grouped = table.group_by(list(_GROUP_KEYS), use_threads=False).aggregate(
        [("spend", "sum"), ("requests", "sum")]
    )
    totals = {
        (row["api_key"], row["model"], row["provider"]): (
            int(row["requests_sum"] or 0),
            row["spend_sum"] if row["spend_sum"] is not None else Decimal(0),
        )
        for row in grouped.to_pylist()
    }
    return _Groups(
        totals=totals,
        unsummable=_count(pc.invert(pc.fill_null(_summable(spend), True))),
        requests=sum(requests for requests, _ in totals.values()),
        spend=reduce(_EXACT.add, (spend for _, spend in totals.values()), Decimal(0)),
    )


def _on_day(table: pa.Table, column: str, day: date) -> pa.Table:
    """The rows of ``table`` dated ``day``; a table without ``column`` is taken as is."""
    if column not in table.column_names:
        return table
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        start = datetime.combine(day, time(), UTC)
        if values.type.tz is None:
            start = start.replace(tzinfo=None)
        lower = pa.scalar(start, values.type)
        upper = pa.scalar(start + timedelta(days=1), values.type)
        return table.filter(pc.and_(pc.greater_equal(values, lower), pc.less(values, upper)))
    if pa.types.is_date(values.type):
        return table.filter(pc.equal(values, pa.scalar(day, values.type)))
    return table.filter(pc.equal(values.cast(pa.string()), day.isoformat()))


def daily_reconciliation(
    lake_rows: pa.Table,
    daily_spend: pa.Table,
    *,
    spend_tolerance: Decimal,
    day: date,
) -> tuple[CheckOutcome, pa.Table]:
    """Compare one UTC day of the lake with ``LiteLLM_DailyUserSpend``, per (key, model, provider).

    LiteLLM's daily table is written by the same proxy but separately from the spend logs, and
    counts every request (failures too). A request whose spend-log row LiteLLM dropped on a
    duplicate provider ``request_id`` shows as one more LiteLLM request; a row logged twice shows
    as one more lake request. ``lake_rows`` needs ``api_key``, ``model``, ``provider`` and
    ``spend`` (``status`` and ``start_time`` are used when present); ``daily_spend`` needs
    ``api_key``, ``model``, ``custom_llm_provider``, ``spend`` and ``api_requests``, one row
    per user, summed here over users. Rows of other days (by ``start_time`` / ``date``) are
    ignored. Returns a WARN outcome and the differing groups (``DIFFERENCES_SCHEMA``, largest
    spend difference first).
    """
    lake_rows = _on_day(lake_rows, "start_time", day)
    daily_spend = _on_day(daily_spend, "date", day)
    lake = _grouped(
        [lake_rows.column(name) for name in _GROUP_KEYS],
        lake_rows.column("spend"),
        pa.repeat(pa.scalar(1, pa.int64()), lake_rows.num_rows),
    )
    litellm = _grouped(
        [daily_spend.column(name) for name in ("api_key", "model", "custom_llm_provider")],
        daily_spend.column("spend"),
        daily_spend.column("api_requests"),
    )
    differences: list[dict[str, Any]] = []
    for key in sorted(set(lake.totals) | set(litellm.totals)):
        lake_requests, lake_spend = lake.totals.get(key, (0, Decimal(0)))
        litellm_requests, litellm_spend = litellm.totals.get(key, (0, Decimal(0)))
        spend_difference = _EXACT.subtract(lake_spend, litellm_spend)
        if lake_requests != litellm_requests or not _within(spend_difference, spend_tolerance):
            differences.append(
                {
                    **dict(zip(_GROUP_KEYS, key, strict=True)),
                    "lake_requests": lake_requests,
                    "litellm_requests": litellm_requests,
                    "lake_spend": lake_spend,
                    "litellm_spend": litellm_spend,
                    "spend_difference": spend_difference,
                }
            )
    differences.sort(
        key=lambda row: (
            -abs(row["spend_difference"]),
            -abs(row["lake_requests"] - row["litellm_requests"]),
        )
    )
    table = pa.Table.from_pylist(differences, schema=DIFFERENCES_SCHEMA)

    groups = len(set(lake.totals) | set(litellm.totals))
    failures = (
        _count(pc.equal(lake_rows.column("status"), "failure"))
        if "status" in lake_rows.column_names
        else 0
    )
    metadata: dict[str, MetadataValue] = {
        "day": day.isoformat(),
        "groups_compared": groups,
        "groups_differing": len(differences),
        "groups_only_in_lake": len(set(lake.totals) - set(litellm.totals)),
        "groups_only_in_litellm": len(set(litellm.totals) - set(lake.totals)),
        "lake_requests": lake.requests,
        "lake_failed_requests": failures,
        "litellm_requests": litellm.requests,
        "lake_spend": plain_decimal(lake.spend),
        "litellm_spend": plain_decimal(litellm.spend),
        "spend_difference": plain_decimal(_EXACT.subtract(lake.spend, litellm.spend)),
        "lake_unsummable_spend_rows": lake.unsummable,
        "litellm_unsummable_spend_rows": litellm.unsummable,
        "spend_tolerance": plain_decimal(spend_tolerance),
    }
    unsummable = lake.unsummable + litellm.unsummable
    passed = not differences and not unsummable
    totals = (
        f"lake {_plural(lake.requests, 'request')} and {plain_decimal(lake.spend)} USD, LiteLLM "
        f"{_plural(litellm.requests, 'request')} and {plain_decimal(litellm.spend)} USD"
    )
    label = f"{day.isoformat()} UTC"
    if passed:
        reason = (
            f"{label}: the lake matches LiteLLM_DailyUserSpend in all "
            f"{_plural(groups, '(api_key, model, provider) group')} ({totals})"
        )
    else:
        parts = []
        if differences:
            parts.append(
                f"{len(differences):,} of {_plural(groups, '(api_key, model, provider) group')} "
                "differ from LiteLLM_DailyUserSpend"
            )
        if unsummable:
            parts.append(
                f"{_plural(unsummable, 'row')} have spend that cannot be summed (NaN, infinite "
                f"or {MAX_SUMMABLE_SPEND:g} USD or more)"
            )
        reason = f"{label}: {'; '.join(parts)} ({totals})"
    outcome = CheckOutcome(
        check=DAILY_RECONCILIATION,
        hour=datetime.combine(day, time(), UTC),
        passed=passed,
        severity=SEVERITIES[DAILY_RECONCILIATION],
        reason=reason,
        metadata=metadata,
    )
    return outcome, table


def _cell(value: object) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, int):
        return f"{value:,}"
    text = str(value)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        text = text[:12] + "…"  # a SHA-256 key hash: a prefix finds it, the whole is noise
    return text.replace("|", "\\|").replace("\n", " ")


def differences_markdown(table: pa.Table, limit: int = 50) -> str:
    """The differences of :func:`daily_reconciliation` as a Markdown table, first ``limit`` rows."""
    if not table.num_rows:
        return "No differences."
    header = (
        "| api_key | model | provider | lake requests | LiteLLM requests | lake spend (USD) "
        "| LiteLLM spend (USD) | difference (USD) |\n"
        "|---|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in table.slice(0, limit).to_pylist():
        cells = [_cell(row[name]) for name in DIFFERENCES_SCHEMA.names]
        cells[-1] = _signed(row["spend_difference"])
        lines.append("| " + " | ".join(cells) + " |")
    if table.num_rows > limit:
        lines.append(f"\n_{table.num_rows - limit:,} more groups not shown._")
    return "\n".join(lines)


__all__ = [
    "DAILY_RECONCILIATION",
    "DEFAULT_SPEND_TOLERANCE",
    "DEFAULT_UNPRICED_SHARE_THRESHOLD",
    "DIFFERENCES_SCHEMA",
    "HOUR_CHECKS",
    "LATE_ROWS",
    "MATCHES_SOURCE",
    "REQUEST_ID_UNIQUE",
    "REQUIRED_FIELDS",
    "SPEND_AND_TOKENS_VALID",
    "START_TIME_IN_HOUR",
    "UNPRICED_TRAFFIC",
    "VALUES_READABLE",
    "CheckOutcome",
    "HourChecker",
    "SourceTotals",
    "blocking_failures",
    "daily_reconciliation",
    "differences_markdown",
    "held_back",
    "late_rows",
]
