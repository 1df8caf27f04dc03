"""When runs and steps ran, and why they failed, read from a Dagster instance's PostgreSQL tables.

The Celery test asserts with these that runs overlapped and uploads did not, and leads its
message with the failures when a run failed; the parallel-runs benchmark adds up the upload
steps' time with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
import psycopg2

UPLOAD_STEP = "cloudzero_billing_drops"


@dataclass(frozen=True)
class Interval:
    """From start to end, in seconds since the epoch, of a run or of one of its steps."""

    run_id: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


def _rows(database_url: str, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


def run_intervals(database_url: str, run_ids: list[str]) -> list[Interval]:
    rows = _rows(
        database_url,
        "SELECT run_id, start_time, end_time FROM runs WHERE run_id = ANY(%s)",
        (run_ids,),
    )
    return [Interval(run_id, start, end) for run_id, start, end in rows]


def step_intervals(database_url: str, step_key: str = UPLOAD_STEP) -> list[Interval]:
    """From STEP_START to STEP_SUCCESS of ``step_key`` in each run that finished it."""
    rows = _rows(
        database_url,
        "SELECT run_id, dagster_event_type, extract(epoch FROM timestamp) FROM event_logs"
        " WHERE step_key = %s AND dagster_event_type IN ('STEP_START', 'STEP_SUCCESS')",
        (step_key,),
    )
    times: dict[str, dict[str, float]] = {}
    for run_id, event, at in rows:
        times.setdefault(run_id, {})[event] = float(at)
    return [
        Interval(run_id, t["STEP_START"], t["STEP_SUCCESS"])
        for run_id, t in times.items()
        if len(t) == 2
    ]


FAILURE_EVENTS = ("STEP_FAILURE", "RUN_FAILURE", "ENGINE_EVENT")


def failures(database_url: str, run_ids: list[str]) -> str:
    """The runs' failure events with their errors and causes, oldest first.

    The services' log tails hold their last lines only; the event log keeps every step's error."""
    rows = _rows(
        database_url,
        "SELECT event FROM event_logs"
        " WHERE run_id = ANY(%s) AND dagster_event_type = ANY(%s) ORDER BY id",
        (run_ids, list(FAILURE_EVENTS)),
    )
    entries = [dg.deserialize_value(event, dg.EventLogEntry) for (event,) in rows]
    lines = []
    for entry in entries:
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if event is None or (event.event_type_value == "ENGINE_EVENT" and error is None):
            continue
        lines.append(
            f"{entry.run_id} {event.step_key or '-'} {event.event_type_value}: {event.message}"
        )
        while error is not None:  # the error, where it was raised, then each cause
            lines += [f"  {error.message.strip()}", *error.stack[-2:]]
            error = error.cause
    return "\n".join(lines) or "no failure events"
