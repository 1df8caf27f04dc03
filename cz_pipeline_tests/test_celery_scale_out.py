"""Scale-out on the real engine: a backfill split into daily runs, their steps on Celery workers.

Everything is what the README's scale-out section tells a deployment to run: the Dagster
instance on PostgreSQL with the repository's ``dagster.yaml`` (queued run coordinator, four runs
at a time, a pool of 1 for CloudZero uploads), the lake on S3 (moto's server), LiteLLM on
PostgreSQL, ``CZ_BACKFILL_HOURS_PER_RUN=24``, ``CZ_CELERY_BROKER_URL`` on Redis, and two
``dagster-celery worker start -A cz_pipeline.celery_worker`` processes, each in its own working
directory and ``DAGSTER_HOME`` with its own ``TMPDIR``, so they share nothing local with each
other or with the daemon. The backfill is launched with the UI's GraphQL mutation and run by
``dagster-daemon``.

Each test gets its own empty Redis database (its own queue), its own PostgreSQL databases and
bucket, and stops every process it started. The daemon submits both runs in its first
backfill iteration, so the test waits for the runs to finish rather than 30 s more for the
next iteration to mark the backfill complete. It took 5 minutes on this shared 2-core machine
under a load average of 10, most of it processes waiting for a core.
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import s3fs

from cz_pipeline.lib.cloudzero import hour_text
from cz_pipeline.lib.hours import HOUR, HourWindow, partition_key
from cz_pipeline.lib.sources.litellm_postgres import LiteLLMPostgresSource
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.conftest import new_database
from cz_pipeline_tests.fakes.cloudzero import FakeCloudZero
from cz_pipeline_tests.instance_timeline import (
    UPLOAD_STEP,
    failures,
    run_intervals,
    step_intervals,
)
from cz_pipeline_tests.test_ui_backfill import (
    BACKFILL_RUNS,
    LAUNCH_PARTITION_BACKFILL,
    WORKSPACE,
    Dagster,
    DagsterHome,
    Service,
    free_port,
    instance_env,
    instance_home,
    stop,
    wait_until_loaded,
)

BIN = Path(sys.executable).parent
REDIS = "redis://127.0.0.1:6379"
ASSETS = ["litellm_spend_logs", "cloudzero_line_items", "cloudzero_billing_drops"]
# Two days well in the past and outside the late-rows sensor's look-back.
FIRST_HOUR = datetime(2025, 6, 1, tzinfo=UTC)
DAYS = 2
WINDOW = HourWindow(FIRST_HOUR, FIRST_HOUR + DAYS * 24 * HOUR)
HOURS = [partition_key(hour) for hour in WINDOW.hours()]
ROWS_PER_HOUR = 5
API_KEY = "celery-test-cloudzero-key"
CONNECTION_ID = "celery-test-connection"
WORKERS = ("worker-1", "worker-2")
WORKER_READY_TIMEOUT_S = 60
RUNS_TIMEOUT_S = 300
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database nobody else uses, emptied afterwards: this test's own queue."""
    databases = list(range(1, 16))
    random.shuffle(databases)
    for number in databases:
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        if client.dbsize() == 0:
            break
        client.close()
    else:
        pytest.fail("no empty Redis database left for the test's queue")
    try:
        yield f"{REDIS}/{number}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"lake-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(
        key="testing", secret="testing", endpoint_url=moto_endpoint, skip_instance_cache=True
    )
    fs.mkdir(name)
    return name


@pytest.fixture
def litellm() -> Iterator[str]:
    with new_database() as url:
        write_to_postgres(url, WINDOW, ROWS_PER_HOUR, seed=12)
        yield url


@dataclass(frozen=True)
class Deployment:
    """The running processes, the fake CloudZero they send to and the LiteLLM they read."""

    dagster: Dagster
    cloudzero: FakeCloudZero
    litellm: str


def deployment_env(
    home: Path, database_url: str, settings: dict[str, str], cloudzero: FakeCloudZero
) -> dict[str, str]:
    """The variables every process of the deployment gets, as the README lists them."""
    env = instance_env(home, database_url)
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(
        settings,
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # dagster-celery starts `celery`
        DAGSTER_EVENT_BATCH_SIZE="100",
        CZ_SOURCE="postgres",
        CZ_BACKFILL_HOURS_PER_RUN="24",
        # Once a year, so that the nightly schedule never adds a run of its own to the test's.
        CZ_DAILY_SCHEDULE_CRON="0 2 1 1 *",
        CLOUDZERO_API_URL=cloudzero.url,
        CLOUDZERO_API_KEY=API_KEY,
        CLOUDZERO_CONNECTION_ID=CONNECTION_ID,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def start_worker(name: str, root: Path, env: dict[str, str], logs: Path) -> Service:
    """A worker as the README starts it, in a working directory of its own."""
    directory = root / name
    home = instance_home(directory / "dagster_home")
    tmp = directory / "tmp"
    tmp.mkdir()
    command = [
        str(BIN / "dagster-celery"),
        *("worker", "start", "-A", "cz_pipeline.celery_worker", "--name", name),
    ]
    worker_env = env | {"DAGSTER_HOME": str(home), "TMPDIR": str(tmp)}
    return Service(name, command, worker_env, logs, cwd=directory)


def wait_for_workers(workers: list[Service]) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    for worker in workers:
        while "ready." not in worker.log.read_text(errors="replace"):
            assert worker.process.poll() is None, worker.tail()
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.25)


@pytest.fixture
def deployment(
    fresh_database: str,
    litellm: str,
    bucket: str,
    broker_url: str,
    moto_endpoint: str,
    tmp_path: Path,
) -> Iterator[Deployment]:
    logs = tmp_path / "logs"
    logs.mkdir()
    lake = f"s3://{bucket}/lake"
    with FakeCloudZero(API_KEY, CONNECTION_ID) as cloudzero:
        home = instance_home(tmp_path / "dagster" / "dagster_home")
        settings = {
            "LITELLM_DATABASE_URL": litellm,
            "CZ_LAKE_URL": lake,
            "CZ_CELERY_BROKER_URL": broker_url,
            "AWS_ENDPOINT_URL": moto_endpoint,
        }
        env = deployment_env(home, fresh_database, settings, cloudzero)
        port = free_port()
        webserver = [
            str(BIN / "dagster-webserver"),
            *("-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)),
        ]
        services = [Service("webserver", webserver, env, logs)]
        try:
            services += [start_worker(name, tmp_path / "workers", env, logs) for name in WORKERS]
            running = Dagster(
                f"http://127.0.0.1:{port}",
                DagsterHome(home, fresh_database, tmp_path / "unused-local-lake", env),
                logs,
                services,
            )
            wait_until_loaded(running)
            wait_for_workers(services[1:])
            yield Deployment(running, cloudzero, litellm)
        finally:
            stop(services)


def litellm_hour_costs(litellm: str) -> dict[str, Decimal]:
    """LiteLLM's exact spend per hour, keyed like ``FakeCloudZero.hour_costs``."""
    totals = LiteLLMPostgresSource(litellm).hourly_totals(WINDOW)
    return {hour_text(hour): totals[hour].spend for hour in WINDOW.hours()}


def steps_and_workers(database_url: str) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """Every (run, step) that started, and the Celery worker that said it executed each one."""
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT run_id, step_key FROM event_logs WHERE dagster_event_type = 'STEP_START'"
            )
            started = {(run_id, step) for run_id, step in cursor.fetchall()}
            cursor.execute(
                "SELECT run_id, step_key, event FROM event_logs"
                " WHERE dagster_event_type = 'ENGINE_EVENT' AND step_key IS NOT NULL"
                " AND event LIKE '%%in celery worker%%'"
            )
            rows = cursor.fetchall()
    finally:
        connection.close()
    workers = {
        (run_id, step): next(name for name in WORKERS if f"{name}@" in event)
        for run_id, step, event in rows
    }
    return started, workers


def wait_for_runs(dagster: Dagster, backfill_id: str) -> list[dict[str, Any]]:
    """The backfill's runs once there are DAYS of them and all have finished.

    The daemon submits every run in its first iteration; waiting for its next one, 30 s later,
    to mark the backfill complete would add nothing but time.
    """
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    tag = {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}
    while True:
        for service in dagster.services:
            assert service.process.poll() is None, f"{service.name} exited\n{dagster.logs()}"
        runs: list[dict[str, Any]] = dagster.graphql(BACKFILL_RUNS, {"filter": tag})["runsOrError"][
            "results"
        ]
        if len(runs) >= DAYS and all(r["status"] in FINISHED for r in runs):
            return runs
        assert time.monotonic() < deadline, f"runs still {runs}\n{dagster.logs()}"
        time.sleep(1)


def test_a_two_day_backfill_runs_as_parallel_daily_runs_on_two_celery_workers(
    deployment: Deployment,
) -> None:
    dagster = deployment.dagster
    params = {
        "tags": [{"key": "dagster/from_ui", "value": "true"}],
        "assetSelection": [{"path": [name]} for name in ASSETS],
        "partitionNames": HOURS,
        "fromFailure": False,
    }
    launched = dagster.graphql(LAUNCH_PARTITION_BACKFILL, {"backfillParams": params})
    launched = launched["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    dagster.start_daemon()  # its first backfill iteration, at startup, submits the runs

    runs = wait_for_runs(dagster, launched["backfillId"])

    # One run per day of 24 hours, all successful.
    database = dagster.home.database_url
    statuses = [r["status"] for r in runs]
    assert statuses == ["SUCCESS"] * DAYS, (
        f"{statuses}\n{failures(database, [r['runId'] for r in runs])}\n{dagster.logs()}"
    )
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
    ranges = sorted((t[RANGE_START], t[RANGE_END]) for t in tags)
    assert ranges == [(HOURS[d * 24], HOURS[d * 24 + 23]) for d in range(DAYS)]

    # Runs overlapped in time: the run queue ran them in parallel.
    intervals = run_intervals(database, [r["runId"] for r in runs])
    assert any(a.overlaps(b) for a in intervals for b in intervals if a is not b), intervals

    # Every step ran on a Celery worker, and both workers took part.
    started, workers = steps_and_workers(database)
    assert {run_id for run_id, _ in started} == {r["runId"] for r in runs}
    assert {step for _, step in started} >= {*ASSETS}
    assert set(workers) == started
    assert set(workers.values()) == set(WORKERS), workers

    # The pool held: one upload step at a time across the parallel runs, so one request at a
    # time to the connection.
    uploads = step_intervals(database, UPLOAD_STEP)
    assert len(uploads) == DAYS
    assert not any(a.overlaps(b) for a in uploads for b in uploads if a is not b), uploads
    assert deployment.cloudzero.concurrency_violations == 0
    assert {p.status for p in deployment.cloudzero.posts()} == {200}

    # CloudZero holds exactly LiteLLM's spend, every hour.
    assert deployment.cloudzero.hour_costs() == litellm_hour_costs(deployment.litellm)
