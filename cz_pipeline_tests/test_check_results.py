"""One verdict per hour and asset from the hour's rule outcomes, as Dagster records it."""

from datetime import UTC, datetime

import dagster as dg

from cz_pipeline.defs.check_results import HOUR_CHECKS, hour_verdicts
from cz_pipeline.lib.checks import CheckOutcome
from cz_pipeline.lib.hours import HOUR, partition_key

ASSET = dg.AssetKey("litellm_spend_logs")
FIRST = datetime(2026, 11, 30, 5, tzinfo=UTC)


def outcome(check: str, hour: datetime, **fields: object) -> CheckOutcome:
    values: dict[str, object] = {"passed": True, "severity": "ERROR", "reason": "fine"}
    return CheckOutcome(check, hour, **(values | fields))  # type: ignore[arg-type]


def test_an_hour_fails_on_any_rule_and_names_each_with_its_ids() -> None:
    warned, held, clean, unjudged = (FIRST + n * HOUR for n in range(4))
    outcomes = [
        # Out of hour order on purpose: verdicts come one per hour, in hour order.
        outcome("required_fields", held),
        outcome(
            "spend_and_tokens_valid",
            held,
            passed=False,
            reason="1 row with negative spend",
            offending_request_ids=("req-1",),
            metadata={"rows": 1},
        ),
        outcome("matches_source", held, judged=False, reason="no totals"),
        outcome(
            "unpriced_traffic",
            warned,
            passed=False,
            severity="WARN",
            reason="12% unpriced",
            offending_request_ids=("req-2", "req-3"),
        ),
        outcome("required_fields", warned),
        outcome("required_fields", clean),
        outcome("unpriced_traffic", clean, severity="WARN"),
        outcome("cbf_contract", unjudged, judged=False, reason="held back upstream"),
    ]
    verdicts = {v.partition: v for v in hour_verdicts(ASSET, outcomes)}

    assert list(verdicts) == [partition_key(h) for h in (warned, held, clean)]
    assert {v.check_name for v in verdicts.values()} == {HOUR_CHECKS}

    blocked = verdicts[partition_key(held)]
    assert not blocked.passed
    assert blocked.severity == dg.AssetCheckSeverity.ERROR
    assert blocked.description == (
        "spend_and_tokens_valid: 1 row with negative spend (matches_source not evaluated)"
    )
    assert blocked.metadata["failed_rules"].value == "spend_and_tokens_valid"
    assert blocked.metadata["offending_request_ids"].value == ["req-1"]
    assert blocked.metadata["spend_and_tokens_valid.rows"].value == 1
    table = str(blocked.metadata["rules"].value)
    failed_row = "| `spend_and_tokens_valid` | ERROR | failed | 1 row with negative spend | req-1 |"
    assert failed_row in table
    assert "| `matches_source` | ERROR | not evaluated | no totals |  |" in table

    warning = verdicts[partition_key(warned)]
    assert not warning.passed
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["offending_request_ids"].value == ["req-2", "req-3"]

    passed = verdicts[partition_key(clean)]
    assert passed.passed
    assert passed.description == "2 rules passed"
    assert passed.metadata["failed_rules"].value == ""
    assert "offending_request_ids" not in passed.metadata
