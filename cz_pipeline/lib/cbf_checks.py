"""Checks on an hour of CloudZero line items before it may be sent.

The same design as the spend-log checks: each returns a :class:`CheckOutcome` for one hour, and
an ERROR failure holds that hour back while the other hours go on.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from cz_pipeline.lib.cbf import (
    BASE_COLUMNS,
    COST_COLUMN,
    CZRN_PATTERN,
    LINE_ITEM_TYPE,
    NUMBER_PATTERN,
    TAG_KEY_PATTERN,
    TAG_PREFIX,
    TIME_COLUMN,
    line_item_cost_by_hour,
)
from cz_pipeline.lib.checks import MAX_OFFENDING_IDS, CheckOutcome
from cz_pipeline.lib.cloudzero import hour_text

CBF_CONTRACT = "cbf_contract"
COST_CONSERVED = "cost_conserved"
TAGS_CONSTANT_PER_RESOURCE = "tags_constant_per_resource"
MONTHLY_ROW_BUDGET = "monthly_row_budget"
LINE_ITEM_CHECKS = (CBF_CONTRACT, COST_CONSERVED, TAGS_CONSTANT_PER_RESOURCE, MONTHLY_ROW_BUDGET)

MONTHLY_ROW_LIMIT = 1_000_000
DEFAULT_BUDGET_SHARE = 0.8
RESOURCE_ID = "resource/id"


def _label(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d %H:%M} UTC"


def _outcome(
    check: str,
    hour: datetime,
    problems: list[str],
    passed_reason: str,
    ids: list[str] | None = None,
    severity: str = "ERROR",
) -> CheckOutcome:
    return CheckOutcome(
        check=check,
        hour=hour,
        passed=not problems,
        severity="WARN" if severity == "WARN" else "ERROR",
        reason=f"{_label(hour)}: " + ("; ".join(problems) if problems else passed_reason),
        offending_request_ids=tuple((ids or [])[:MAX_OFFENDING_IDS]),
    )


def _not_matching(values: pa.ChunkedArray, pattern: str) -> pa.Array:
    return pc.invert(pc.fill_null(pc.match_substring_regex(values, pattern), False))


def cbf_contract(hour: datetime, items: pa.Table) -> CheckOutcome:
    """Strings only, plain decimals, known columns, valid tag keys and CZRNs, the hour itself.

    ``offending_request_ids`` holds the offending ``resource/id`` values here: line items have no
    request ids.
    """
    problems: list[str] = []
    bad_ids: list[str] = []
    unknown = [
        name
        for name in items.column_names
        if name not in BASE_COLUMNS and not name.startswith(TAG_PREFIX)
    ]
    if unknown:
        problems.append(f"unknown columns {unknown}")
    missing = [name for name in BASE_COLUMNS if name not in items.column_names]
    if missing:
        problems.append(f"missing columns {missing}")
    not_strings = [f.name for f in items.schema if not pa.types.is_string(f.type)]
    if not_strings:
        problems.append(f"non-string columns {not_strings}")
    bad_tags = [
        name
        for name in items.column_names
        if name.startswith(TAG_PREFIX) and not TAG_KEY_PATTERN.match(name[len(TAG_PREFIX) :])
    ]
    if bad_tags:
        problems.append(f"tag keys with characters CloudZero refuses: {bad_tags}")
    if problems or not items.num_rows:
        return _outcome(CBF_CONTRACT, hour, problems, "no line items")
    row_checks = {
        "cost/cost is not a plain decimal": _not_matching(
            items[COST_COLUMN], NUMBER_PATTERN.pattern
        ),
        "usage/amount is not a plain decimal": _not_matching(
            items["usage/amount"], NUMBER_PATTERN.pattern
        ),
        f"time/usage_start is not {hour_text(hour)}": pc.invert(
            pc.fill_null(pc.equal(items[TIME_COLUMN], hour_text(hour)), False)
        ),
        "resource/id is not a valid CZRN": _not_matching(items[RESOURCE_ID], CZRN_PATTERN.pattern),
        f"lineitem/type is not {LINE_ITEM_TYPE}": pc.invert(
            pc.fill_null(pc.equal(items["lineitem/type"], LINE_ITEM_TYPE), False)
        ),
    }
    for what, mask in row_checks.items():
        count = int(pc.sum(mask).as_py() or 0)
        if count:
            problems.append(f"{count:,} rows: {what}")
            bad_ids.extend(items.filter(mask)[RESOURCE_ID].to_pylist()[:MAX_OFFENDING_IDS])
    return _outcome(
        CBF_CONTRACT,
        hour,
        problems,
        f"{items.num_rows:,} line items follow the CBF contract",
        [str(i) for i in bad_ids],
    )


def cost_conserved(
    hour: datetime, items: pa.Table, spend: Decimal, tolerance: Decimal
) -> CheckOutcome:
    """The exact sum of ``cost/cost`` equals the hour's exact ``sum(spend)``."""
    sent = line_item_cost_by_hour(items).get(hour_text(hour), Decimal(0)) if items.num_rows else 0
    difference = Decimal(sent) - spend
    problems = []
    if abs(difference) > tolerance:
        problems.append(
            f"line items cost {sent} USD but the hour's spend logs sum to {spend} USD "
            f"(difference {difference} USD, tolerance {tolerance} USD)"
        )
    return _outcome(COST_CONSERVED, hour, problems, f"line items carry exactly {spend} USD")


def _tag_columns(items: pa.Table) -> list[str]:
    return [name for name in items.column_names if name.startswith(TAG_PREFIX)]


def tags_constant_per_resource(hour: datetime, items: pa.Table, known: pa.Table) -> CheckOutcome:
    """Each ``resource/tag:*`` has one value per ``resource/id``, in the hour and across the lake.

    CloudZero keeps one value per resource and tag and rewrites history with the latest, so a
    tag that varies would silently relabel old spend. ``known`` holds the tags already sent.
    """
    tags = _tag_columns(items)
    problems: list[str] = []
    bad: list[str] = []
    duplicated = items.group_by(RESOURCE_ID).aggregate([(RESOURCE_ID, "count")])
    repeated = duplicated.filter(pc.greater(duplicated[f"{RESOURCE_ID}_count"], 1))
    if repeated.num_rows:
        problems.append(f"{repeated.num_rows:,} resource ids appear more than once in the hour")
        bad.extend(repeated[RESOURCE_ID].to_pylist())
    shared = [name for name in tags if name in known.column_names]
    if known.num_rows and shared:
        left = items.select([RESOURCE_ID, *shared])
        right = known.select([RESOURCE_ID, *shared]).rename_columns(
            [RESOURCE_ID, *[f"known:{name}" for name in shared]]
        )
        joined = left.join(right, RESOURCE_ID, join_type="inner")
        for name in shared:
            now, before = joined[name], joined[f"known:{name}"]
            differs = pc.invert(
                pc.fill_null(pc.equal(now, before), pc.and_(pc.is_null(now), pc.is_null(before)))
            )
            count = int(pc.sum(pc.fill_null(differs, True)).as_py() or 0)
            if count:
                problems.append(f"{count:,} resource ids change {name} from an earlier hour")
                bad.extend(joined.filter(pc.fill_null(differs, True))[RESOURCE_ID].to_pylist())
    return _outcome(
        TAGS_CONSTANT_PER_RESOURCE,
        hour,
        problems,
        f"{items.num_rows:,} resource ids keep their tags",
        [str(i) for i in bad],
    )


def merge_known_tags(known: pa.Table, items: pa.Table) -> pa.Table:
    """The tag registry after an hour: earlier resources keep their first-seen tags."""
    tags = [RESOURCE_ID, *_tag_columns(items)]
    new = items.select(tags)
    if not known.num_rows:
        return new
    fresh = new.filter(pc.invert(pc.is_in(new[RESOURCE_ID], value_set=known[RESOURCE_ID])))
    return pa.concat_tables([known, fresh], promote_options="default")


def monthly_row_budget(
    hour: datetime,
    rows_by_hour: Mapping[datetime, int],
    *,
    limit: int = MONTHLY_ROW_LIMIT,
    share: float = DEFAULT_BUDGET_SHARE,
) -> CheckOutcome:
    """Warns when the month's line items, projected from its hours so far, pass ``share`` of
    CloudZero's 1,000,000 rows per connection and month: the grain is a budget."""
    month_hours = calendar.monthrange(hour.year, hour.month)[1] * 24
    in_month = {
        h: n for h, n in rows_by_hour.items() if (h.year, h.month) == (hour.year, hour.month)
    }
    so_far = sum(in_month.values())
    projected = int(so_far / max(1, len(in_month)) * month_hours)
    problems = []
    if projected > limit * share:
        problems.append(
            f"{so_far:,} line items in {len(in_month)} hours of {hour:%Y-%m} project to "
            f"{projected:,} for the month, over {share:.0%} of CloudZero's {limit:,} rows; "
            "coarsen the grain (CZ_CBF_GRAIN)"
        )
    return _outcome(
        MONTHLY_ROW_BUDGET,
        hour,
        problems,
        f"{hour:%Y-%m} projects to {projected:,} line items of CloudZero's {limit:,}",
        severity="WARN",
    )
