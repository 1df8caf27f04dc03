"""The per-hour record: pieces round-trip, one reader merges them, versions are enforced, and
the sync comparison and placeholder rule read it as the README says."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cz_pipeline.lib.checks import CheckOutcome, SourceTotals
from cz_pipeline.lib.hour_record import (
    DeliveryPiece,
    HourRecord,
    LineItemPiece,
    RecordVersionError,
    SpendLogPiece,
    Verdict,
    newer_snapshot,
    read_record,
    read_records,
    write_piece,
)
from cz_pipeline.lib.hours import HOUR
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.sync import drift, drifts, fingerprint

HOUR_0 = datetime(2026, 11, 30, 23, tzinfo=UTC)
SNAPSHOT = datetime(2026, 12, 1, 0, 5, 1, 123456, tzinfo=UTC)
TINY = Decimal("1.2E-23")

SPEND_LOGS = SpendLogPiece(
    source="postgres",
    snapshot=SNAPSHOT,
    extracted_at=SNAPSHOT + timedelta(seconds=3),
    rows=2,
    spend=Decimal("3.000000000000000000001"),
    held_back=False,
    verdicts=(
        Verdict.of(CheckOutcome("matches_source", HOUR_0, True, "ERROR", "ok")),
        Verdict.of(CheckOutcome("request_id_unique", HOUR_0, False, "ERROR", "twice", ("r1",))),
    ),
)
LINE_ITEMS = LineItemPiece(
    snapshot=SNAPSHOT,
    built_at=SNAPSHOT + timedelta(seconds=4),
    source_rows=2,
    source_spend=Decimal("3.000000000000000000001"),
    rows=1,
    cost=Decimal("3.000000000000000000001"),
    held_back=False,
    held_because="",
    verdicts=(),
)
DELIVERED = DeliveryPiece(
    state="delivered",
    dry_run=False,
    snapshot=SNAPSHOT,
    written_at=SNAPSHOT + timedelta(seconds=5),
    run_id="run-1",
    source_rows=2,
    source_spend=Decimal("3.000000000000000000001"),
    rows=1,
    cost=TINY,
    placeholder=False,
    drop_ids=("d1", "d2"),
    chunks=2,
    body_sha256=("a" * 64, "b" * 64),
)


def test_each_piece_round_trips_exactly_and_one_reader_merges_them(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    for piece in (SPEND_LOGS, LINE_ITEMS, DELIVERED):
        write_piece(lake, HOUR_0, piece)
    record = read_record(lake, HOUR_0)
    assert record == HourRecord(HOUR_0, SPEND_LOGS, LINE_ITEMS, DELIVERED)
    assert record.delivery is not None
    assert record.delivery.cost == TINY
    assert [v.check for v in record.verdicts] == ["matches_source", "request_id_unique"]
    assert record.first_blocking() == ("litellm_spend_logs", SPEND_LOGS.verdicts[1])


def test_the_batch_reader_reads_many_hours_and_missing_pieces_are_none(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    write_piece(lake, HOUR_0, SPEND_LOGS)
    write_piece(lake, HOUR_0 + 2 * HOUR, DELIVERED)
    records = read_records(lake, [HOUR_0 + i * HOUR for i in range(3)])
    assert list(records) == [HOUR_0, HOUR_0 + HOUR, HOUR_0 + 2 * HOUR]
    assert records[HOUR_0].spend_logs == SPEND_LOGS
    assert records[HOUR_0].delivery is None
    assert records[HOUR_0 + HOUR] == HourRecord(HOUR_0 + HOUR)
    assert records[HOUR_0 + 2 * HOUR].delivery == DELIVERED
    assert "materialize it first" in (records[HOUR_0 + HOUR].spend_logs_hold() or "")


def test_a_piece_that_cannot_be_read_fails_instead_of_looking_never_written(
    tmp_path: Path,
) -> None:
    """Read as missing, a delivery piece would say CloudZero holds nothing for the hour."""
    lake = Lake(str(tmp_path))
    write_piece(lake, HOUR_0, SPEND_LOGS)
    path = Path(write_piece(lake, HOUR_0, DELIVERED))
    path.unlink()
    path.mkdir()  # there, but not readable as a file
    with pytest.raises(IsADirectoryError, match=r"delivery\.json"):
        read_record(lake, HOUR_0)


def test_an_unknown_version_fails_naming_the_file(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    path = Path(write_piece(lake, HOUR_0, DELIVERED))
    content = json.loads(path.read_text())
    path.write_text(json.dumps(content | {"version": 2}))
    with pytest.raises(RecordVersionError, match=r"delivery\.json: record version 2, but"):
        read_record(lake, HOUR_0)


def test_only_a_newer_snapshot_is_kept() -> None:
    assert newer_snapshot(None, SNAPSHOT) is None
    assert newer_snapshot(SPEND_LOGS, SNAPSHOT) is None
    assert newer_snapshot(SPEND_LOGS, SNAPSHOT + HOUR) is None
    reason = newer_snapshot(DELIVERED, SNAPSHOT - HOUR)
    assert reason is not None
    assert reason.startswith("stale: this run read LiteLLM's snapshot of")


@pytest.mark.parametrize(
    ("delivery", "dry_run", "may_hold"),
    [
        (None, False, False),
        (DELIVERED, False, True),
        (replace(DELIVERED, rows=0, placeholder=True), False, False),
        (replace(DELIVERED, state="sending"), False, True),
        (replace(DELIVERED, state="failed", error="500"), False, True),
        (replace(DELIVERED, state="dry_run", dry_run=True, rows=0), False, True),
        (replace(DELIVERED, state="dry_run", dry_run=True, rows=0), True, False),
    ],
    ids=["never", "non-empty", "placeholder", "sending", "failed", "other-mode", "dry-empty"],
)
def test_a_placeholder_is_needed_only_where_cloudzero_may_hold_cost(
    delivery: DeliveryPiece | None, dry_run: bool, may_hold: bool
) -> None:
    record = HourRecord(HOUR_0, SPEND_LOGS, LINE_ITEMS, delivery)
    assert record.cloudzero_may_hold_data(dry_run) is may_hold


SOURCE = SourceTotals(2, Decimal("3.000000000000000000001"))


@pytest.mark.parametrize(
    ("delivery", "source", "reason", "settled"),
    [
        (DELIVERED, SOURCE, None, False),
        (DELIVERED, SourceTotals(3, Decimal(24)), "LiteLLM holds 3 rows", False),
        (replace(DELIVERED, state="sending"), SOURCE, "never finished", False),
        (replace(DELIVERED, state="failed", error="400 bad"), SOURCE, "failed: 400 bad", True),
        (replace(DELIVERED, state="dry_run", dry_run=True), SOURCE, "other destination", False),
        (None, SOURCE, "never sent", False),
        (None, SourceTotals(0, Decimal(0)), None, False),
    ],
    ids=["agrees", "late-rows", "crash", "refused", "dry-run-only", "never-sent", "quiet"],
)
def test_the_sync_comparison_reads_the_last_send(
    delivery: DeliveryPiece | None, source: SourceTotals, reason: str | None, settled: bool
) -> None:
    record = HourRecord(HOUR_0, SPEND_LOGS, LINE_ITEMS, delivery)
    found = drift(record, source, dry_run=False, tolerance=Decimal("1e-9"))
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found.reason
        assert found.settled is settled


def test_a_held_back_hour_with_unchanged_source_waits_for_a_person() -> None:
    held = replace(LINE_ITEMS, held_back=True, held_because="cbf_contract failed")
    record = HourRecord(HOUR_0, SPEND_LOGS, held, None)
    found = drift(record, SOURCE, dry_run=False, tolerance=Decimal(0))
    assert found is not None
    assert found.settled
    assert "cbf_contract failed" in found.reason
    grown = drift(record, SourceTotals(3, Decimal(5)), dry_run=False, tolerance=Decimal(0))
    assert grown is not None
    assert not grown.settled


def test_hours_after_the_newest_one_worked_on_are_left_to_the_schedule() -> None:
    hours = [HOUR_0 + i * HOUR for i in range(3)]
    records = {h: HourRecord(h) for h in hours}
    records[hours[1]] = HourRecord(hours[1], SPEND_LOGS, LINE_ITEMS, DELIVERED)
    source = dict.fromkeys(hours, SourceTotals(1, Decimal(1)))
    source[hours[1]] = SOURCE
    found = drifts(records, source, dry_run=False, tolerance=Decimal(0))
    assert [d.hour for d in found] == [hours[0]]


def test_the_run_key_fingerprint_changes_with_the_source_the_records_or_a_failed_run() -> None:
    record = HourRecord(HOUR_0, SPEND_LOGS, LINE_ITEMS, DELIVERED)
    base = fingerprint([record], {HOUR_0: SOURCE})
    assert fingerprint([record], {HOUR_0: SOURCE}) == base
    assert fingerprint([record], {HOUR_0: SourceTotals(3, SOURCE.spend)}) != base
    crashed = replace(record, delivery=replace(DELIVERED, state="sending"))
    assert fingerprint([crashed], {HOUR_0: SOURCE}) != base
    assert fingerprint([record], {HOUR_0: SOURCE}, also="failed-run-id") != base
