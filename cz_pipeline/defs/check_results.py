"""Turn the lib's check outcomes into what Dagster records: per-hour verdicts, or one per run.

Per-hour checks are partitioned ``AssetCheckSpec``s. An asset that runs a range of hours in one
run logs one ``AssetCheckEvaluation(partition=hour)`` per judged hour, so each hour's page and the
check's partition view carry that hour's own verdict. The asset is a ``multi_asset`` with
``can_subset=True``, which makes its check outputs optional: Dagster then needs no extra
run-level result, and a planned hour left without a verdict (the check could not judge it)
shows as skipped, never as passed.

Checks that judge days or a look-back window stay run-level: one result naming the days or
hours, with the reason and up to 20 offending request ids each.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import dagster as dg

from cz_pipeline.lib.checks import MAX_OFFENDING_IDS, CheckOutcome, Severity
from cz_pipeline.lib.hours import partition_key

Unit = Literal["hour", "day"]


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


def hour_verdict(asset_key: dg.AssetKey, outcome: CheckOutcome) -> dg.AssetCheckEvaluation:
    """One judged hour's verdict, recorded as the check result of that hour's partition."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=outcome.check,
        passed=outcome.passed,
        severity=severity(outcome.severity),
        description=outcome.reason,
        metadata=_outcome_metadata(outcome),
        partition=partition_key(outcome.hour),
    )


def log_hour_verdicts(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, outcomes: Iterable[CheckOutcome]
) -> None:
    """Log the verdict of every judged hour of every selected check.

    An outcome that could not judge its hour logs nothing: Dagster shows the hour's planned
    evaluation as skipped (not evaluated), and the asset's hour metadata says why.
    """
    selected = context.selected_asset_check_keys
    for outcome in outcomes:
        if outcome.judged and dg.AssetCheckKey(asset_key, outcome.check) in selected:
            context.log_event(hour_verdict(asset_key, outcome))


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
