"""CloudZero converges to LiteLLM whatever happens to a run: kill -9 and overlapping runs.

Victim runs are real processes (``victim_run.py``) killed with SIGKILL at a known point: while
their read waits on a table lock, or while the fake CloudZero stalls a chunk it has committed.
Then the sync sensor is evaluated and its runs executed, and CloudZero must equal LiteLLM per
hour. Waits are bounded polls of a condition, never sleeps standing in for synchronisation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from cz_pipeline.defs.automation import RANGE_END, RANGE_START, cloudzero_sync_sensor
from cz_pipeline.defs.cloudzero.checks import delivery_outcome
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    CloudZeroResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib.cloudzero import hour_text
from cz_pipeline.lib.hour_record import read_record, write_piece
from cz_pipeline.lib.hours import HOUR, HourWindow, floor_hour, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero, Fault
from cz_pipeline_tests.pipeline_runs import fetch_one
from cz_pipeline_tests.victim_run import run_hours

REPO = Path(__file__).resolve().parents[1]
API_KEY = "czk_TESTSECRET_convergence_0b7e"
CONNECTION_ID = "5a1c7f00-2b9e-4d1a-8c3f-6e2d9b0a4c17"
# Small bodies: every hour goes out as a replace_hourly chunk and several sum chunks.
SMALL_BODIES = 2_500
ROWS_PER_HOUR = 20
START = floor_hour(datetime.now(UTC)) - 8 * HOUR
HOURS = [START + i * HOUR for i in range(3)]
WAIT_S = 120.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def cloudzero(fake: FakeCloudZero) -> CloudZeroResource:
    return CloudZeroResource(
        api_url=fake.url,
        api_key=API_KEY,
        connection_id=CONNECTION_ID,
        max_body_bytes=SMALL_BODIES,
        backoff_base=0.001,
    )


def run(url: str, lake: Path, fake: FakeCloudZero, first: str, last: str) -> bool:
    success, _ = run_hours(str(lake), url, first, last, cloudzero(fake))
    return success


def start_victim(url: str, lake: Path, fake: FakeCloudZero, hours: list[datetime]) -> Any:
    args = [lake, url, partition_key(hours[0]), partition_key(hours[-1]), fake.url]
    args += [API_KEY, CONNECTION_ID, SMALL_BODIES]
    return subprocess.Popen(
        [sys.executable, "-m", "cz_pipeline_tests.victim_run", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(victim: subprocess.Popen[str]) -> None:
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=WAIT_S)


def sensor(url: str, lake: Path, fake: FakeCloudZero) -> dg.SensorResult | dg.SkipReason:
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance,
            resources={
                "spend_log_source": SpendLogSourceResource(kind="postgres", database_url=url),
                "lake": LakeResource(url=str(lake)),
                "cloudzero": cloudzero(fake),
                "check_thresholds": CheckThresholdsResource(),
            },
        ) as context,
    ):
        result = cloudzero_sync_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def requested_hours(result: dg.SensorResult | dg.SkipReason) -> list[tuple[str, str]]:
    assert isinstance(result, dg.SensorResult), result
    return [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests or []]


def run_sensor_requests(url: str, lake: Path, fake: FakeCloudZero) -> None:
    for first, last in requested_hours(sensor(url, lake, fake)):
        assert run(url, lake, fake, first, last)


def litellm_costs(url: str) -> dict[str, Decimal]:
    totals = LiteLLMPostgresSource(url).hourly_totals(HourWindow(HOURS[0], HOURS[-1] + HOUR))
    return {hour_text(hour): t.spend for hour, t in sorted(totals.items())}


def add_late_row(cursor: Any, hour: datetime, spend: str = "21.00") -> None:
    cursor.execute(
        """INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens,
        prompt_tokens, completion_tokens, "startTime", "endTime", model, metadata, request_tags)
        SELECT 'late-' || request_id, call_type, api_key, %s, total_tokens, prompt_tokens,
        completion_tokens, "startTime" + interval '1 second', "endTime", model, metadata,
        request_tags FROM "LiteLLM_SpendLogs" WHERE "startTime" >= %s
        ORDER BY "startTime" LIMIT 1""",
        (spend, hour.replace(tzinfo=None)),
    )


def add_late_row_now(url: str, hour: datetime) -> None:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        add_late_row(cursor, hour)


@contextmanager
def spend_logs_locked(url: str) -> Iterator[psycopg2.extensions.cursor]:
    """Another session holding LiteLLM's spend-log table: every read of it waits."""
    connection = psycopg2.connect(url)
    try:
        cursor = connection.cursor()
        cursor.execute('LOCK TABLE "LiteLLM_SpendLogs" IN ACCESS EXCLUSIVE MODE')
        yield cursor
        connection.commit()
    finally:
        connection.close()


def reader_waits_on_lock(url: str) -> bool:
    (waiting,) = fetch_one(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'cz-pipeline' AND wait_event_type = 'Lock'",
    )
    return bool(waiting)


@pytest.fixture
def litellm(fresh_database: str) -> str:
    write_to_postgres(fresh_database, HourWindow(HOURS[0], HOURS[-1] + HOUR), ROWS_PER_HOUR, 3)
    return fresh_database


def test_kill_mid_extract_then_the_sensor_converges(litellm: str, tmp_path: Path) -> None:
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake:
        assert run(litellm, tmp_path, fake, partition_key(HOURS[0]), partition_key(HOURS[-1]))
        add_late_row_now(litellm, HOURS[1])
        with spend_logs_locked(litellm):
            victim = start_victim(litellm, tmp_path, fake, HOURS)
            wait_for(lambda: reader_waits_on_lock(litellm), "the victim's read to wait")
            kill(victim)
        assert fake.hour_costs() != litellm_costs(litellm)
        assert requested_hours(sensor(litellm, tmp_path, fake)) == [
            (partition_key(HOURS[1]), partition_key(HOURS[1]))
        ]
        run_sensor_requests(litellm, tmp_path, fake)
        assert fake.hour_costs() == litellm_costs(litellm)
        assert isinstance(sensor(litellm, tmp_path, fake), dg.SkipReason)


@pytest.mark.parametrize("delivered_before", [False, True], ids=["first-upload", "re-upload"])
def test_kill_mid_upload_of_a_multi_chunk_hour_then_the_sensor_converges(
    litellm: str, tmp_path: Path, delivered_before: bool
) -> None:
    hour = HOURS[1]
    lake = Lake(str(tmp_path))
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake:
        if delivered_before:
            assert run(litellm, tmp_path, fake, partition_key(HOURS[0]), partition_key(HOURS[-1]))
            add_late_row_now(litellm, hour)
        # The first sum chunk is committed, then its answer hangs: the victim dies there.
        fake.script(Fault.stall(WAIT_S, commit=True, operation="sum"))
        victim = start_victim(litellm, tmp_path, fake, [hour])
        wait_for(lambda: any(r.fault == "stall" for r in fake.requests), "the stalled chunk")
        kill(victim)

        # CloudZero holds part of the hour, and everything reads the hour as not delivered.
        assert fake.hour_costs()[hour_text(hour)] < litellm_costs(litellm)[hour_text(hour)]
        record = read_record(lake, hour)
        assert record.delivery is not None
        assert record.delivery.state == "sending"
        outcome = delivery_outcome(record, dry_run=False)
        assert not outcome.passed
        assert "never finished" in outcome.reason
        # Without an earlier run, the hour before it is a gap the sensor fills too; the hour
        # after the newest one worked on is left to the schedule.
        first = hour if delivered_before else HOURS[0]
        expected = [(partition_key(first), partition_key(hour))]
        assert requested_hours(sensor(litellm, tmp_path, fake)) == expected

        run_sensor_requests(litellm, tmp_path, fake)
        costs = fake.hour_costs()
        assert costs[hour_text(hour)] == litellm_costs(litellm)[hour_text(hour)]
        if delivered_before:
            assert costs == litellm_costs(litellm)
        assert isinstance(sensor(litellm, tmp_path, fake), dg.SkipReason)


def test_an_older_snapshot_never_replaces_a_newer_one(litellm: str, tmp_path: Path) -> None:
    """Run A reads LiteLLM, late rows arrive, run B delivers them, then A goes on."""
    hour = HOURS[1]
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake:
        with spend_logs_locked(litellm) as session:
            run_a = start_victim(litellm, tmp_path, fake, [hour])
            # A has taken its snapshot and waits for the table; hold A itself, then let the
            # late rows in and release the table.
            wait_for(lambda: reader_waits_on_lock(litellm), "run A's read to wait")
            os.kill(run_a.pid, signal.SIGSTOP)
            add_late_row(session, hour)
        try:
            assert run(litellm, tmp_path, fake, partition_key(hour), partition_key(hour))  # run B
            after_b = fake.hour_costs()
            assert after_b[hour_text(hour)] == litellm_costs(litellm)[hour_text(hour)]
        finally:
            os.kill(run_a.pid, signal.SIGCONT)
        out, err = run_a.communicate(timeout=WAIT_S)
    assert run_a.returncode == 0, err[-3000:]
    assert (
        fake.hour_costs() == after_b == {hour_text(hour): litellm_costs(litellm)[hour_text(hour)]}
    )
    metadata = json.loads(out)
    key = partition_key(hour)
    stale = metadata["litellm_spend_logs"][key]["stale"]
    assert stale.startswith("stale: this run read LiteLLM's snapshot of")
    assert f"{key} {stale}" in err
    # What A sent was B's newer snapshot, not its own.
    assert (
        metadata["cloudzero_billing_drops"][key]["snapshot"]
        > (metadata["litellm_spend_logs"][key]["snapshot"])
    )


def test_an_upload_older_than_what_cloudzero_holds_is_skipped(litellm: str, tmp_path: Path) -> None:
    """The upload step's own guard: the hour's delivery came from a newer snapshot than the line
    items this run is about to send (a newer run delivered in between)."""
    hour, key = HOURS[0], partition_key(HOURS[0])
    lake = Lake(str(tmp_path))
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake:
        assert run(litellm, tmp_path, fake, key, key)
        delivered = read_record(lake, hour).delivery
        assert delivered is not None
        newer = replace(delivered, snapshot=datetime.now(UTC) + HOUR, run_id="a-newer-run")
        write_piece(lake, hour, newer)
        posts = len(fake.posts())
        success, metadata = run_hours(str(tmp_path), litellm, key, key, cloudzero(fake))
        assert len(fake.posts()) == posts
    assert success
    drop = metadata["cloudzero_billing_drops"][key]
    assert drop["state"] == "stale"
    assert drop["delivered"] is False
    assert drop["stale"].startswith("stale: this run read LiteLLM's snapshot of")
    assert read_record(lake, hour).delivery == newer
