"""The whole job against real PostgreSQL LiteLLM data and the fake CloudZero over real HTTP.

Client-level behaviour (chunking, retries, redaction, the fake's contract) is pinned in
``test_cloudzero_client.py``; these tests prove the assets and checks put it together: exact
hourly totals after re-uploads, the dry run's bodies are the upload's, the key stays secret,
months split at the boundary, emptied hours are cleared, the read-back check, and retries.
The last two pin bugs these tests found: single-hour runs skipped the gate, and a shorter
dry run left stale bodies in the outbox.

Runs that only read LiteLLM share one seeded database (module scope); the expensive day is
materialized once (dry, real, real) and several tests assert on it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pyarrow.parquet as pq
import pytest

from cz_pipeline.definitions import defs
from cz_pipeline.defs.resources import (
    CheckThresholdsResource,
    CloudZeroResource,
    LakeResource,
    SpendLogSourceResource,
)
from cz_pipeline.lib.cloudzero import EMPTY_HOUR_RESOURCE_ID, hour_text, render_bodies
from cz_pipeline.lib.hour_record import read_record
from cz_pipeline.lib.hours import HOUR, HourWindow, partition_key
from cz_pipeline.lib.lake import Lake
from cz_pipeline.lib.money import money_sum
from cz_pipeline.lib.spend_log_lake import SPEND_LOGS_DATASET
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.conftest import ADMIN_URL
from cz_pipeline_tests.fakes.cloudzero import (
    SCOPE_CREATE,
    SCOPE_LIST,
    SCOPE_READ_MONTH,
    WRITE_ONLY_SCOPES,
    FakeCloudZero,
    Fault,
    RequestRecord,
    _Response,
    _StoredRow,
)
from cz_pipeline_tests.pipeline_runs import (
    QUIET,
    check_evaluations,
    execute,
    hour_metadata,
    run_job,
)

API_KEY = "czk_TESTSECRET_9f2c41d7e8b3a6055c1d"
CONNECTION_ID = "3f9d2a10-7c4e-4b8a-9e61-d0c5a7b2e413"
ROWS_PER_HOUR = 6
SEED = 11
# The synthetic traffic prices a few models at 0 on purpose; unpriced traffic is not tested here.
CLEAN = 0.5
# Small enough that most hours go out as a replace_hourly chunk followed by sum chunks.
SMALL_BODIES = 2_500
TINY_BACKOFF = 0.001

DAY = datetime(2026, 10, 30, tzinfo=UTC)
DAY_HOURS = [DAY + i * HOUR for i in range(24)]
BOUNDARY_HOURS = [datetime(2026, 9, 30, 22, tzinfo=UTC) + i * HOUR for i in range(4)]


# ---------------------------------------------------------------------------------------------
# Helpers


@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """``dg.instance_for_test()`` with its SQLite files on tmpfs where there is one: on a busy
    disk, SQLite's fsyncs are most of a run's storage time."""
    shm = "/dev/shm"
    with (
        tempfile.TemporaryDirectory(dir=shm if os.path.isdir(shm) else None) as folder,
        dg.instance_for_test(temp_dir=folder) as instance,
    ):
        yield instance


def cloudzero(fake: FakeCloudZero, **overrides: Any) -> CloudZeroResource:
    config: dict[str, Any] = {
        "api_url": fake.url,
        "api_key": API_KEY,
        "connection_id": CONNECTION_ID,
        "backoff_base": TINY_BACKOFF,
    }
    config.update(overrides)
    return CloudZeroResource(**config)


def run(
    instance: dg.DagsterInstance,
    lake_dir: Path,
    database_url: str,
    hours: list[datetime],
    resource: CloudZeroResource | None = None,
) -> dg.ExecuteInProcessResult:
    return run_job(
        instance,
        lake_dir,
        partition_key(hours[0]),
        partition_key(hours[-1]),
        database_url=database_url,
        cloudzero=resource,
        unpriced_share_threshold=CLEAN,
    )


def run_one_partition(
    instance: dg.DagsterInstance,
    lake_dir: Path,
    database_url: str,
    hour: datetime,
    resource: CloudZeroResource,
) -> dg.ExecuteInProcessResult:
    """The job for one hour launched as Dagster launches a single partition (the UI's
    "Materialize" of one hour, ``--partition``): a ``dagster/partition`` tag, not a range."""
    return (
        defs()
        .resolve_job_def("litellm_to_cloudzero")
        .execute_in_process(
            instance=instance,
            partition_key=partition_key(hour),
            resources={
                "lake": LakeResource(url=str(lake_dir)),
                "spend_log_source": SpendLogSourceResource(
                    kind="postgres", database_url=database_url
                ),
                "cloudzero": resource,
                "check_thresholds": CheckThresholdsResource(unpriced_share_threshold=CLEAN),
            },
            run_config=QUIET,
            raise_on_error=False,
        )
    )


def lake_spend(lake_dir: Path, hours: list[datetime]) -> dict[str, Decimal]:
    """The lake's exact spend per hour, keyed like ``FakeCloudZero.hour_costs``.

    Two independent readings must agree: the hour record's spend and an exact decimal sum over
    the hour's Parquet file.
    """
    lake = Lake(str(lake_dir))
    spend: dict[str, Decimal] = {}
    for hour in hours:
        spend_logs = read_record(lake, hour).spend_logs
        assert spend_logs is not None
        from_status = spend_logs.spend
        from_parquet = money_sum(
            lake.read_hour(SPEND_LOGS_DATASET, hour, columns=["spend"])["spend"]
        )
        assert from_status == from_parquet, partition_key(hour)
        spend[hour_text(hour)] = from_status
    return spend


def delete_hour(database_url: str, hour: datetime) -> None:
    """Empty the hour at the source, as LiteLLM's retention or a restore would."""
    execute(
        database_url,
        'DELETE FROM "LiteLLM_SpendLogs" WHERE "startTime" >= %s AND "startTime" < %s',
        (hour.replace(tzinfo=None), (hour + HOUR).replace(tzinfo=None)),
    )


def post_hour(record: RequestRecord) -> str:
    hour: str = json.loads(record.body)["data"][0]["time/usage_start"]
    return hour


def operations_by_hour(posts: list[RequestRecord]) -> dict[str, list[str | None]]:
    by_hour: dict[str, list[str | None]] = {}
    for record in posts:
        by_hour.setdefault(post_hour(record), []).append(record.operation)
    return by_hour


def outbox_bodies(lake_dir: Path, hours: list[datetime]) -> list[bytes]:
    lake = Lake(str(lake_dir))
    bodies: list[bytes] = []
    for hour in hours:
        folder = Path(lake.hour_folder("cloudzero_outbox", hour))
        files = sorted(folder.glob("body-*.json"))
        assert [f.name for f in files] == [f"body-{n:03d}.json" for n in range(1, len(files) + 1)]
        bodies += [f.read_bytes() for f in files]
    return bodies


def event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything Dagster stored about a run: each event log entry serialized whole (user
    messages, dagster events with their metadata and errors) and the run record itself."""
    entries = instance.all_logs(run_id)
    assert entries, f"no event log for run {run_id}"
    texts = [dg.serialize_value(entry) for entry in entries]
    texts += [entry.user_message for entry in entries]
    run_record = instance.get_run_by_id(run_id)
    assert run_record is not None
    texts.append(dg.serialize_value(run_record))
    return "\n".join(texts)


def lake_text(lake_dir: Path) -> dict[str, str]:
    """Every file of the lake as text; Parquet files decoded (their pages are compressed)."""
    texts: dict[str, str] = {}
    for path in sorted(p for p in lake_dir.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            texts[str(path)] = f"{parquet.schema_arrow}\n{parquet.read().to_pydict()}"
        else:
            texts[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    return texts


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def litellm() -> Iterator[str]:
    """A LiteLLM PostgreSQL holding the hours of 2026-10-30 and 2026-09-30 22:00 to 2026-10-01
    01:00 (``conftest.fresh_database``, once per module).

    Shared by the tests that only read it; a test that changes LiteLLM uses ``fresh_database``.
    """
    name = f"cz_test_{uuid.uuid4().hex[:12]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            for hours in (DAY_HOURS, BOUNDARY_HOURS):
                window = HourWindow(hours[0], hours[-1] + HOUR)
                write_to_postgres(url, window, ROWS_PER_HOUR, SEED)
            yield url
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@dataclass
class UploadedDay:
    lake_dir: Path
    fake: FakeCloudZero
    instance: dg.DagsterInstance
    dry: dg.ExecuteInProcessResult
    first: dg.ExecuteInProcessResult
    second: dg.ExecuteInProcessResult
    first_posts: list[RequestRecord]
    second_posts: list[RequestRecord]
    costs_after_first: dict[str, Decimal]
    rows_after_first: int


@pytest.fixture(scope="module")
def uploaded_day(litellm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadedDay]:
    """2026-10-30 run dry, then uploaded, then uploaded again, all into one lake."""
    lake_dir = tmp_path_factory.mktemp("day_lake")
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        dry = run(
            instance, lake_dir, litellm, DAY_HOURS, CloudZeroResource(max_body_bytes=SMALL_BODIES)
        )
        assert fake.requests == []
        real = cloudzero(fake, max_body_bytes=SMALL_BODIES)
        first = run(instance, lake_dir, litellm, DAY_HOURS, real)
        first_posts = fake.posts()
        costs_after_first = fake.hour_costs()
        rows_after_first = fake.row_count("2026-10")
        second = run(instance, lake_dir, litellm, DAY_HOURS, real)
        yield UploadedDay(
            lake_dir=lake_dir,
            fake=fake,
            instance=instance,
            dry=dry,
            first=first,
            second=second,
            first_posts=first_posts,
            second_posts=fake.posts()[len(first_posts) :],
            costs_after_first=costs_after_first,
            rows_after_first=rows_after_first,
        )


# ---------------------------------------------------------------------------------------------
# 1. A day uploaded twice


def test_a_day_uploaded_twice_leaves_cloudzero_equal_to_the_lake(uploaded_day: UploadedDay) -> None:
    day = uploaded_day
    assert day.dry.success
    assert day.first.success
    assert day.second.success
    expected = lake_spend(day.lake_dir, DAY_HOURS)
    assert len(expected) == 24
    assert sum(expected.values()) > 0
    # Exactly the lake's spend per hour, after the first upload and unchanged by the second.
    assert day.costs_after_first == expected
    assert day.fake.hour_costs() == expected
    assert day.fake.row_count("2026-10") == day.rows_after_first
    assert day.fake.months() == ["2026-10"]
    # The second run replaced every hour: one replace_hourly first, then only sum chunks.
    second = operations_by_hour(day.second_posts)
    assert sorted(second) == sorted(expected)
    for hour, operations in second.items():
        assert operations[0] == "replace_hourly", hour
        assert set(operations[1:]) <= {"sum"}, hour
    assert all(r.status == 200 and r.committed for r in day.second_posts)
    assert any(len(ops) > 1 for ops in second.values()), "no hour was chunked: raise the rows"
    assert day.fake.concurrency_violations == 0


# ---------------------------------------------------------------------------------------------
# 2. The dry run writes what the upload sends


def test_the_dry_run_writes_byte_for_byte_the_bodies_the_upload_sends(
    uploaded_day: UploadedDay,
) -> None:
    day = uploaded_day
    dry_bodies = outbox_bodies(day.lake_dir, DAY_HOURS)
    sent = [r.body for r in day.first_posts]
    assert len(dry_bodies) == len(sent) > 24  # some hours need more than one body
    assert dry_bodies == sent
    assert [r.body for r in day.second_posts] == sent
    dry_receipts = hour_metadata(day.dry, "cloudzero_billing_drops")
    real_receipts = hour_metadata(day.first, "cloudzero_billing_drops")
    for hour in DAY_HOURS:
        key = partition_key(hour)
        assert dry_receipts[key]["dry_run"] is True
        assert real_receipts[key]["dry_run"] is False
        assert dry_receipts[key]["body_sha256"] == real_receipts[key]["body_sha256"], key


# ---------------------------------------------------------------------------------------------
# 3. The API key stays secret


def test_the_api_key_never_reaches_the_event_log_or_the_lake(uploaded_day: UploadedDay) -> None:
    day = uploaded_day
    drop_ids = day.fake.drop_ids
    assert drop_ids
    for result in (day.dry, day.first, day.second):
        logged = event_log_text(day.instance, result.run_id)
        assert API_KEY not in logged
    # The search does see metadata: the second run's drop ids are in its materializations.
    assert drop_ids[-1] in event_log_text(day.instance, day.second.run_id)
    files = lake_text(day.lake_dir)
    kinds = {Path(p).name for p in files}
    assert {"delivery.json", "spend_logs.json", "line_items.json", "body-001.json"} <= kinds
    assert not [path for path, text in files.items() if API_KEY in text]
    assert any(drop_ids[-1] in text for text in files.values())  # receipts are searched


class EchoingCloudZero(FakeCloudZero):
    """A CloudZero whose 403 message repeats the Authorization header it was sent."""

    def _auth(self, header: str | None, scope: str) -> _Response | None:
        denied = super()._auth(header, scope)
        if denied is not None and denied.body.get("message", "").startswith("Forbidden: "):
            denied.body["message"] = f"Forbidden: API key {header} lacks scope {scope}"
        return denied


def test_a_403_fails_the_run_fast_with_cloudzeros_message_and_no_key(
    litellm: str, tmp_path: Path
) -> None:
    read_only = frozenset({SCOPE_LIST, SCOPE_READ_MONTH})
    with (
        EchoingCloudZero(API_KEY, CONNECTION_ID, scopes=read_only) as fake,
        dagster_instance() as instance,
    ):
        result = run(instance, tmp_path, litellm, DAY_HOURS[:3], cloudzero(fake))
        logged = event_log_text(instance, result.run_id)
    assert not result.success
    # Fast: one request, no retry, no later hour, no read-back.
    assert len(fake.requests) == 1
    assert fake.requests[0].status == 403
    failures = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
        and e.step_key == "cloudzero_billing_drops"
    ]
    assert len(failures) == 1
    error = failures[0].step_failure_data.error
    assert error is not None
    message = error.to_string()
    assert "HTTP 403" in message
    assert f"lacks scope {SCOPE_CREATE}" in message
    assert partition_key(DAY_HOURS[0]) in message
    assert API_KEY not in message
    assert API_KEY not in logged
    assert not [p for p, text in lake_text(tmp_path).items() if API_KEY in text]


# ---------------------------------------------------------------------------------------------
# 4. A month boundary


def test_a_range_across_a_month_boundary_lands_each_hour_in_its_own_month(
    litellm: str, tmp_path: Path
) -> None:
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        result = run(instance, tmp_path, litellm, BOUNDARY_HOURS, cloudzero(fake))
    assert result.success
    expected = lake_spend(tmp_path, BOUNDARY_HOURS)
    assert fake.months() == ["2026-09", "2026-10"]
    assert fake.hour_costs("2026-09") == {
        "2026-09-30T22:00:00Z": expected["2026-09-30T22:00:00Z"],
        "2026-09-30T23:00:00Z": expected["2026-09-30T23:00:00Z"],
    }
    assert fake.hour_costs("2026-10") == {
        "2026-10-01T00:00:00Z": expected["2026-10-01T00:00:00Z"],
        "2026-10-01T01:00:00Z": expected["2026-10-01T01:00:00Z"],
    }
    for record in fake.posts():
        assert record.month == post_hour(record)[:7]


# ---------------------------------------------------------------------------------------------
# 5. An hour emptied at the source


def test_an_hour_emptied_at_the_source_is_cleared_in_cloudzero(
    fresh_database: str, tmp_path: Path
) -> None:
    hours = DAY_HOURS[10:13]
    emptied = hours[1]
    write_to_postgres(fresh_database, HourWindow(hours[0], hours[-1] + HOUR), ROWS_PER_HOUR, SEED)
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        first = run(instance, tmp_path, fresh_database, hours, cloudzero(fake))
        assert first.success
        before = fake.hour_costs()
        assert before == lake_spend(tmp_path, hours)
        assert before[hour_text(emptied)] > 0
        delete_hour(fresh_database, emptied)
        posted_before = len(fake.posts())
        second = run(instance, tmp_path, fresh_database, [emptied], cloudzero(fake))
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    after = fake.hour_costs()
    assert after[hour_text(emptied)] == 0
    assert {h: c for h, c in after.items() if h != hour_text(emptied)} == {
        h: c for h, c in before.items() if h != hour_text(emptied)
    }
    left = [r for r in fake.stored_rows() if r["time/usage_start"] == hour_text(emptied)]
    assert [(r["resource/id"], r["cost/cost"]) for r in left] == [(EMPTY_HOUR_RESOURCE_ID, "0")]
    assert [r.operation for r in fake.posts()[posted_before:]] == ["replace_hourly"]


def test_a_quiet_hour_sent_for_the_first_time_sends_nothing(
    fresh_database: str, tmp_path: Path
) -> None:
    """No placeholder where CloudZero cannot hold anything: it would only add a row."""
    hours = DAY_HOURS[4:7]
    quiet = hours[1]
    write_to_postgres(fresh_database, HourWindow(hours[0], hours[-1] + HOUR), ROWS_PER_HOUR, SEED)
    delete_hour(fresh_database, quiet)
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        result = run(instance, tmp_path, fresh_database, hours, cloudzero(fake))
    assert result.success
    assert hour_text(quiet) not in operations_by_hour(fake.posts())
    assert sorted(fake.hour_costs()) == [hour_text(hours[0]), hour_text(hours[2])]
    sent = read_record(Lake(str(tmp_path)), quiet).delivery
    assert sent is not None
    assert (sent.state, sent.rows, sent.chunks, sent.placeholder) == ("delivered", 0, 0, False)
    assert check_evaluations(result)["every_hour_delivered"].passed


# ---------------------------------------------------------------------------------------------
# 6. The read-back check


def test_the_read_back_check_passes_after_an_upload(uploaded_day: UploadedDay) -> None:
    for result in (uploaded_day.first, uploaded_day.second):
        evaluation = check_evaluations(result)["cloudzero_matches_lake"]
        assert evaluation.passed
        assert not (evaluation.description or "").startswith("skipped")
        assert "skipped" not in evaluation.metadata
        assert evaluation.metadata["hours_judged"].value == 24
        assert evaluation.metadata["failed_hours"].value == ""
    dry = check_evaluations(uploaded_day.dry)["cloudzero_matches_lake"]
    assert dry.passed
    assert (dry.description or "").startswith("skipped: dry run")


def test_the_read_back_check_is_skipped_without_the_read_scope(
    litellm: str, tmp_path: Path
) -> None:
    hours = DAY_HOURS[4:6]
    with (
        FakeCloudZero(API_KEY, CONNECTION_ID, scopes=WRITE_ONLY_SCOPES) as fake,
        dagster_instance() as instance,
    ):
        result = run(instance, tmp_path, litellm, hours, cloudzero(fake))
    assert result.success
    assert fake.hour_costs() == lake_spend(tmp_path, hours)
    evaluation = check_evaluations(result)["cloudzero_matches_lake"]
    assert evaluation.passed
    assert (evaluation.description or "").startswith("skipped: the API key cannot read")
    assert "read_billing_anycost_billing_drops_month" in evaluation.metadata["skipped"].value
    reads = [r for r in fake.requests if r.method == "GET"]
    assert [r.status for r in reads] == [403]


class DriftingCloudZero(FakeCloudZero):
    """A CloudZero that stores one cent more than it was sent in every replaced hour."""

    def _commit(self, month: str, operation: str, rows: list[_StoredRow]) -> _Response:
        if operation == "replace_hourly" and rows:
            extra = _StoredRow(rows[0].hour, {**rows[0].row, "cost/cost": "0.01"}, 1, "")
            rows = [*rows, extra]
        return super()._commit(month, operation, rows)


def test_the_read_back_check_warns_when_cloudzero_differs_from_the_lake(
    litellm: str, tmp_path: Path
) -> None:
    hours = DAY_HOURS[4:6]
    with DriftingCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        result = run(instance, tmp_path, litellm, hours, cloudzero(fake))
    assert result.success  # a WARN check does not fail the run
    evaluation = check_evaluations(result)["cloudzero_matches_lake"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["failed_hours"].value == ", ".join(partition_key(h) for h in hours)
    assert "CloudZero holds" in (evaluation.description or "")


# ---------------------------------------------------------------------------------------------
# 7. Transient faults mid-run


class FaultsAfter(FakeCloudZero):
    """The fake, but scripted faults only start matching after ``after_posts`` POSTs."""

    def __init__(self, *args: Any, after_posts: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_posts = after_posts
        self._posts_seen = 0

    def _take_fault(self, route: str, operation: str | None) -> Fault | None:
        if route == "drops":
            with self._state_lock:
                self._posts_seen += 1
                early = self._posts_seen <= self.after_posts
            if early:
                return None
        return super()._take_fault(route, operation)


def test_transient_faults_mid_run_converge_to_exact_totals(
    litellm: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cz_pipeline")
    hours = DAY_HOURS[8:14]
    with (
        FaultsAfter(API_KEY, CONNECTION_ID, after_posts=4) as fake,
        dagster_instance() as instance,
    ):
        fake.script(
            Fault.http(500),
            Fault.http(429, retry_after="1"),
            Fault.commit_then(502, operation="sum"),
        )
        result = run(
            instance, tmp_path, litellm, hours, cloudzero(fake, max_body_bytes=SMALL_BODIES)
        )
    assert result.success
    assert fake.pending_faults() == 0
    statuses = [r.status for r in fake.posts()]
    assert statuses[:4] == [200] * 4
    assert {500, 429, 502} <= set(statuses)
    # The committed-then-failed sum chunk did not double count: exact totals, no extra rows.
    assert fake.hour_costs() == lake_spend(tmp_path, hours)
    lake = Lake(str(tmp_path))
    lake_rows = sum(lake.read_hour("cloudzero_line_items", h).num_rows or 1 for h in hours)
    assert fake.row_count("2026-10") == lake_rows
    receipts = hour_metadata(result, "cloudzero_billing_drops")
    assert all(receipts[partition_key(h)]["delivered"] for h in hours)
    assert sum(receipts[partition_key(h)]["attempts"] for h in hours) == len(hours) + 3
    assert fake.concurrency_violations == 0
    assert check_evaluations(result)["cloudzero_matches_lake"].passed
    # The client's retry warnings (Python logging, not Dagster's) name the failure, not the key.
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3
    assert any("HTTP 429" in message for message in retries)
    assert API_KEY not in caplog.text


# ---------------------------------------------------------------------------------------------
# The delivery gate, and bugs found while writing these tests


def test_an_hour_cloudzero_refuses_fails_the_run_after_the_other_hours_arrive(
    litellm: str, tmp_path: Path
) -> None:
    hours = DAY_HOURS[16:18]
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        fake.script(Fault.http(400))
        result = run(instance, tmp_path, litellm, hours, cloudzero(fake))
    assert not result.success
    assert [r.status for r in fake.posts()] == [400, 200]
    assert fake.hour_costs() == {
        hour_text(hours[1]): lake_spend(tmp_path, hours)[hour_text(hours[1])]
    }
    gate = check_evaluations(result)["every_hour_delivered"]
    assert not gate.passed
    assert gate.metadata["failed_hours"].value == partition_key(hours[0])
    assert "CloudZero did not accept it" in (gate.description or "")
    assert "scripted fault" in (gate.description or "")


def test_a_single_partition_run_is_gated_like_a_range(litellm: str, tmp_path: Path) -> None:
    hour = DAY_HOURS[19]
    with FakeCloudZero(API_KEY, CONNECTION_ID) as fake, dagster_instance() as instance:
        fake.script(Fault.http(400))
        result = run_one_partition(instance, tmp_path, litellm, hour, cloudzero(fake))
    assert [r.status for r in fake.posts()] == [400]
    assert fake.hour_costs() == {}
    receipt = hour_metadata(result, "cloudzero_billing_drops")[partition_key(hour)]
    assert receipt["delivered"] is False
    # The hour never reached CloudZero, so the blocking gate must fail the run, as it does
    # for the same refusal in a range (the test above).
    assert not result.success
    gate = check_evaluations(result)["every_hour_delivered"]
    assert gate.metadata["hours_judged"].value == 1
    assert not gate.passed


def test_a_repeated_dry_run_leaves_only_the_bodies_it_would_send(
    litellm: str, tmp_path: Path
) -> None:
    hour = DAY_HOURS[12]
    with dagster_instance() as instance:
        small = run(
            instance, tmp_path, litellm, [hour], CloudZeroResource(max_body_bytes=SMALL_BODIES)
        )
        assert small.success
        assert len(outbox_bodies(tmp_path, [hour])) > 1
        again = run(instance, tmp_path, litellm, [hour], CloudZeroResource())
    assert again.success
    items = Lake(str(tmp_path)).read_hour("cloudzero_line_items", hour)
    expected = render_bodies(hour, items)
    assert len(expected) == 1
    written = outbox_bodies(tmp_path, [hour])
    assert len(written) == len(expected)
    assert written == expected
