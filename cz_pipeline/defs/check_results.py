"""Turn the lib's check outcomes into what Dagster records: per-hour verdicts, or one per run.

Each hourly asset has one partitioned check, ``hour_checks``, whose rules are the lib's per-hour
checks (``required_fields``, ``unpriced_traffic``, ``cost_conserved``, ...). An asset that runs a
range of hours in one run logs one ``AssetCheckEvaluation(partition=hour)`` per judged hour, so
each hour's page and the check's partition view carry that hour's own verdict: failed if any
rule failed (ERROR when a rule that holds the hour back failed, else WARN), with every rule's
verdict and reason in its metadata. One evaluation per hour and asset, not one per rule: each is
a separate write to Dagster's event log (check evaluations are not batched in 1.13), and eleven
per hour made a 30-day backfill 2.3 times slower (bench/README.md). The asset is a
``multi_asset`` with ``can_subset=True``, which makes its check output optional: Dagster then
needs no extra run-level result, and an hour no rule could judge shows as skipped, never as
passed.

Checks that judge days or a look-back window stay run-level: one result naming the days or
hours, with the reason and up to 20 offending request ids each.
"""

from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any, Literal

import dagster as dg

from cz_pipeline.lib.checks import MAX_OFFENDING_IDS, CheckOutcome, Severity
from cz_pipeline.lib.hours import partition_key

Unit = Literal["hour", "day"]

# The one per-hour check of each hourly asset; its rules are the lib's per-hour checks.
HOUR_CHECKS = "hour_checks"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def severity(level: Severity) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if level == "WARN" else dg.AssetCheckSeverity.ERROR


def _outcome_metadata(outcome: CheckOutcome) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(outcome.metadata)
    if outcome.offending_request_ids:
        ids = list(outcome.offending_request_ids[:MAX_OFFENDING_IDS])
        metadata["offending_request_ids"] = dg.MetadataValue.json(ids)
    return metadata


def _rule_row(outcome: CheckOutcome) -> str:
    verdict = "not evaluated" if not outcome.judged else "passed" if outcome.passed else "failed"
    ids = ", ".join(outcome.offending_request_ids[:MAX_OFFENDING_IDS])
    return (
        f"| `{outcome.check}` | {outcome.severity} | {verdict} | {_cell(outcome.reason)} | "
        f"{_cell(ids)} |"
    )


def hour_verdict(
    asset_key: dg.AssetKey, outcomes: Sequence[CheckOutcome]
) -> dg.AssetCheckEvaluation:
    """One hour's verdict over its rules, recorded as the check result of that hour's partition.

    ``outcomes`` are one hour's, at least one of them judged."""
    judged = [o for o in outcomes if o.judged]
    failed = [o for o in judged if not o.passed]
    level: Severity = "ERROR" if any(o.blocking for o in failed) or not failed else "WARN"
    if failed:
        description = "; ".join(f"{o.check}: {o.reason}" for o in failed)
    else:
        description = f"{len(judged)} rules passed"
    unjudged = [o.check for o in outcomes if not o.judged]
    if unjudged:
        description += f" ({', '.join(unjudged)} not evaluated)"
    metadata: dict[str, Any] = {
        "failed_rules": ", ".join(o.check for o in failed),
        "rules": dg.MetadataValue.md(
            "| rule | severity | verdict | reason | request ids |\n|---|---|---|---|---|\n"
            + "\n".join(_rule_row(o) for o in outcomes)
        ),
    }
    ids = [i for o in failed for i in o.offending_request_ids][:MAX_OFFENDING_IDS]
    if ids:
        metadata["offending_request_ids"] = dg.MetadataValue.json(ids)
    # A passed rule's figures are in its reason; a verdict is one write per hour, so only the
    # failed rules add theirs.
    for outcome in failed:
        metadata.update({f"{outcome.check}.{k}": v for k, v in outcome.metadata.items()})
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=HOUR_CHECKS,
        passed=not failed,
        severity=severity(level),
        description=description,
        metadata=metadata,
        partition=partition_key(outcomes[0].hour),
    )


def hour_verdicts(
    asset_key: dg.AssetKey, outcomes: Iterable[CheckOutcome]
) -> Iterator[dg.AssetCheckEvaluation]:
    """One verdict per hour that any rule judged, in hour order."""
    for _, group in groupby(sorted(outcomes, key=lambda o: o.hour), key=lambda o: o.hour):
        hour_outcomes = list(group)
        if any(o.judged for o in hour_outcomes):
            yield hour_verdict(asset_key, hour_outcomes)


def log_hour_verdicts(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, outcomes: Iterable[CheckOutcome]
) -> None:
    """Log the verdict of every hour any rule judged, when ``hour_checks`` is selected.

    An hour no rule could judge logs nothing: Dagster shows the hour's planned evaluation as
    skipped (not evaluated), and the asset's hour metadata says why.
    """
    if dg.AssetCheckKey(asset_key, HOUR_CHECKS) not in context.selected_asset_check_keys:
        return
    for evaluation in hour_verdicts(asset_key, outcomes):
        context.log_event(evaluation)


def not_evaluated(outcomes: Iterable[CheckOutcome]) -> str:
    """The checks that could not judge an hour, with why, for that hour's metadata."""
    return "; ".join(f"{o.check}: {o.reason}" for o in outcomes if not o.judged)


def check_result(
    check_name: str,
    outcomes: Sequence[CheckOutcome],
    *,
    asset_key: dg.AssetKey | None = None,
    description: str | None = None,
    unit: Unit = "hour",
) -> dg.AssetCheckResult:
    """One result for the run over its hours or days: passed only if every one passed."""
    failed = [o for o in outcomes if not o.passed]
    level = outcomes[0].severity if outcomes else "ERROR"
    labels = [_label(o, unit) for o in outcomes]
    metadata: dict[str, Any] = {
        f"{unit}s_judged": len(outcomes),
        f"first_{unit}": labels[0] if labels else "",
        f"last_{unit}": labels[-1] if labels else "",
        f"failed_{unit}s": ", ".join(_label(o, unit) for o in failed),
    }
    ids = [i for o in failed for i in o.offending_request_ids][:MAX_OFFENDING_IDS]
    if ids:
        metadata["offending_request_ids"] = dg.MetadataValue.json(ids)
    if failed:
        rows = [
            f"| {_label(o, unit)} | {_cell(o.reason)} | "
            f"{', '.join(o.offending_request_ids[:MAX_OFFENDING_IDS])} |"
            for o in failed
        ]
        metadata["failures"] = dg.MetadataValue.md(
            f"| {unit} | reason | request ids |\n|---|---|---|\n" + "\n".join(rows)
        )
        summary = failed[0].reason
        if len(failed) > 1:
            summary += f" (and {len(failed) - 1} more {unit}{'s' if len(failed) > 2 else ''})"
    else:
        summary = outcomes[0].reason if len(outcomes) == 1 else f"{len(outcomes)} {unit}s passed"
    if len(outcomes) == 1:
        metadata.update(outcomes[0].metadata)
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=not failed,
        severity=severity(level),
        metadata=metadata,
        description=description or summary,
    )


def window_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    """A run-level check that judged one look-back window: its figures as the lib gives them."""
    return dg.AssetCheckResult(
        check_name=outcome.check,
        passed=outcome.passed,
        severity=severity(outcome.severity),
        metadata=_outcome_metadata(outcome),
        description=outcome.reason,
    )


def _label(outcome: CheckOutcome, unit: Unit) -> str:
    return f"{outcome.hour:%Y-%m-%d}" if unit == "day" else partition_key(outcome.hour)
