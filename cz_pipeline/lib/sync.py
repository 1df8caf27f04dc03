"""Which hours CloudZero holds differently from LiteLLM, and the runs that would fix them.

The comparison is LiteLLM's per-hour totals now against the source totals of what the hour's
record says was last sent. It finds every way an hour can drift: rows LiteLLM wrote late, a run
killed mid-send (its record still says ``sending``), spend logs re-materialized without being
sent, a send that lost to a newer snapshot. Hours that agree are never re-run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from cz_pipeline.lib.checks import SourceTotals
from cz_pipeline.lib.hour_record import HourRecord
from cz_pipeline.lib.hours import HOUR, partition_key

NO_ROWS = SourceTotals(0, Decimal(0))


@dataclass(frozen=True)
class Drift:
    """An hour whose CloudZero state differs from LiteLLM; ``settled`` hours wait for a person."""

    hour: datetime
    source: SourceTotals
    reason: str
    settled: bool = False


def _agrees(a: SourceTotals, b: SourceTotals, tolerance: Decimal) -> bool:
    return a.rows == b.rows and abs(a.spend - b.spend) <= tolerance


def _totals(totals: SourceTotals) -> str:
    return f"{totals.rows:,} rows, {totals.spend} USD"


def drift(
    record: HourRecord, source: SourceTotals, *, dry_run: bool, tolerance: Decimal
) -> Drift | None:
    """How the hour's last send differs from LiteLLM now, or None when they agree.

    A drift is ``settled`` when the last attempt already saw exactly these source totals and
    stopped on purpose (a blocking check, CloudZero refusing): re-running it would do the same.
    """
    sent = record.delivery
    if sent is None and _agrees(source, NO_ROWS, tolerance):
        return None
    if sent is not None and sent.sent(dry_run) and _agrees(sent.source_totals, source, tolerance):
        return None
    spend_logs, line_items = record.spend_logs, record.line_items
    if spend_logs is not None and spend_logs.held_back and spend_logs.totals == source:
        return Drift(record.hour, source, f"held back: {record.spend_logs_hold()}", settled=True)
    if line_items is not None and line_items.held_back and line_items.source_totals == source:
        return Drift(record.hour, source, f"held back: {record.line_items_hold()}", settled=True)
    if sent is None:
        return Drift(record.hour, source, f"never sent; LiteLLM holds {_totals(source)}")
    if sent.state == "sending":
        why = f"a send started at {sent.written_at.isoformat()} never finished"
    elif sent.state == "failed":
        why = f"the last send failed: {sent.error}"
        if _agrees(sent.source_totals, source, tolerance):
            return Drift(record.hour, source, why, settled=True)
    elif not sent.sent(dry_run):
        why = "last sent to the other destination (dry run / CloudZero)"
    else:
        why = f"LiteLLM holds {_totals(source)}, CloudZero was sent {_totals(sent.source_totals)}"
    return Drift(record.hour, source, why)


def drifts(
    records: Mapping[datetime, HourRecord],
    source_now: Mapping[datetime, SourceTotals],
    *,
    dry_run: bool,
    tolerance: Decimal,
) -> list[Drift]:
    """Every hour of ``records`` whose CloudZero state differs from ``source_now``.

    Only hours the pipeline has worked on count, and the gaps before the newest of them (a run
    that died before writing anything): hours after it are left to the schedule, so the sync
    never runs ahead of it.
    """
    worked_on = [h for h, r in records.items() if r.spend_logs or r.line_items or r.delivery]
    if not worked_on:
        return []
    newest = max(worked_on)
    found = (
        drift(record, source_now.get(hour, NO_ROWS), dry_run=dry_run, tolerance=tolerance)
        for hour, record in sorted(records.items())
        if hour <= newest
    )
    return [d for d in found if d is not None]


def blocks(hours: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Runs of consecutive hours as (first, last): one run request each."""
    out: list[tuple[datetime, datetime]] = []
    for hour in sorted(hours):
        if out and out[-1][1] + HOUR == hour:
            out[-1] = (out[-1][0], hour)
        else:
            out.append((hour, hour))
    return out


def fingerprint(
    records: Iterable[HourRecord], source_now: Mapping[datetime, SourceTotals], also: str = ""
) -> str:
    """Changes whenever LiteLLM's totals or any stage's record of these hours change (or
    ``also``): the same hours in the same state ask for the same run, so a tick never launches
    it twice."""
    digest = hashlib.sha256(also.encode())
    for record in records:
        source = source_now.get(record.hour, NO_ROWS)
        stamps = [
            record.spend_logs and record.spend_logs.extracted_at.isoformat(),
            record.line_items and record.line_items.built_at.isoformat(),
            record.delivery and f"{record.delivery.state}@{record.delivery.written_at.isoformat()}",
        ]
        digest.update(
            f"{partition_key(record.hour)}={source.rows}:{source.spend}:{stamps};".encode()
        )
    return digest.hexdigest()[:16]
