"""Turn the lib's per-hour check outcomes into one Dagster check result per run.

Partitioned asset checks do not work with single-run ranges in Dagster 1.13 (their records stay
PLANNED), so each check is evaluated once per run and its result names the hours it judged and
the hours that failed, with the reason and up to 20 offending request ids each.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from cz_pipeline.lib.checks import MAX_OFFENDING_IDS, CheckOutcome
from cz_pipeline.lib.hours import partition_key


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def check_result(
    check_name: str,
    outcomes: Sequence[CheckOutcome],
    *,
    asset_key: dg.AssetKey | None = None,
    description: str | None = None,
) -> dg.AssetCheckResult:
    """One result for the run: passed only if every hour passed."""
    failed = [o for o in outcomes if not o.passed]
    severity = outcomes[0].severity if outcomes else "ERROR"
    hours = [partition_key(o.hour) for o in outcomes]
    metadata: dict[str, Any] = {
        "hours_judged": len(outcomes),
        "first_hour": hours[0] if hours else "",
        "last_hour": hours[-1] if hours else "",
        "failed_hours": ", ".join(partition_key(o.hour) for o in failed),
    }
    ids = [i for o in failed for i in o.offending_request_ids][:MAX_OFFENDING_IDS]
    if ids:
        metadata["offending_request_ids"] = dg.MetadataValue.json(ids)
    if failed:
        rows = [
            f"| {partition_key(o.hour)} | {_cell(o.reason)} | "
            f"{', '.join(o.offending_request_ids[:MAX_OFFENDING_IDS])} |"
            for o in failed
        ]
        metadata["failures"] = dg.MetadataValue.md(
            "| hour | reason | request ids |\n|---|---|---|\n" + "\n".join(rows)
        )
        summary = failed[0].reason
        if len(failed) > 1:
            summary += f" (and {len(failed) - 1} more hours)"
    else:
        summary = outcomes[0].reason if len(outcomes) == 1 else f"{len(outcomes)} hours passed"
    if len(outcomes) == 1:
        metadata.update(outcomes[0].metadata)
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN if severity == "WARN" else dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description or summary,
    )
