"""The production instance (the repository's ``dagster.yaml``) stores a run's events on one kept
PostgreSQL connection, and a connection the server closed costs a reconnect, not a lost event."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
from dagster._core.storage.event_log import EventLogStorage
from dagster_postgres import PostgresEventLogStorage

from cz_pipeline import instance_storage
from cz_pipeline.instance_storage import PostgresEventLogKeepingAConnection
from cz_pipeline_tests.test_ui_backfill import instance_env, instance_home

EVENTS = 50


@pytest.fixture
def production_home(fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DAGSTER_HOME holding the repository's dagster.yaml, on the test's database."""
    home = instance_home(tmp_path / "dagster_home")
    for name, value in instance_env(home, fresh_database).items():
        if name.startswith("DAGSTER_"):
            monkeypatch.setenv(name, value)


@pytest.fixture
def instance(production_home: None) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as production:
        yield production


@pytest.fixture
def connects() -> Iterator[list[object]]:
    """Every new PostgreSQL connection any SQLAlchemy engine of this process opens."""
    opened: list[object] = []

    def on_connect(connection: object, _record: object) -> None:
        opened.append(connection)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", on_connect)
    try:
        yield opened
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", on_connect)


def log_entry(run_id: str, number: int) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message=f"event {number}",
        run_id=run_id,
        timestamp=time.time(),
    )


def store(storage: EventLogStorage, run_id: str, count: int) -> None:
    for number in range(count):
        storage.store_event(log_entry(run_id, number))


def test_the_event_log_keeps_one_connection_where_dagster_postgres_opens_one_per_event(
    instance: dg.DagsterInstance, connects: list[object]
) -> None:
    storage = instance.event_log_storage
    assert isinstance(storage, PostgresEventLogKeepingAConnection)
    store(storage, "kept", EVENTS)
    assert len(connects) == 1
    assert len(storage.get_logs_for_run("kept")) == EVENTS

    connects.clear()
    stock = PostgresEventLogStorage(storage.postgres_url)
    store(stock, "stock", EVENTS)
    assert len(connects) >= EVENTS


def test_a_connection_the_server_closed_is_replaced_before_the_next_event(
    instance: dg.DagsterInstance, fresh_database: str
) -> None:
    storage = instance.event_log_storage
    store(storage, "restarted", 1)
    admin = psycopg2.connect(fresh_database)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.rowcount == 1  # the kept connection, idle between events
    finally:
        admin.close()
    store(storage, "restarted", 1)
    assert [e.user_message for e in storage.get_logs_for_run("restarted")] == ["event 0"] * 2


def sessions(database_url: str) -> int:
    """Connections to the database besides the one asking."""
    admin = psycopg2.connect(database_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            (count,) = cursor.fetchone() or (0,)
            return int(count)
    finally:
        admin.close()


def test_the_server_closes_a_connection_kept_idle_and_the_next_event_reconnects(
    production_home: None, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that stopped writing (a Celery worker between steps) holds no connection."""
    monkeypatch.setattr(instance_storage, "IDLE_SESSION_TIMEOUT_MS", 300)
    with dg.DagsterInstance.get() as production:
        storage = production.event_log_storage
        store(storage, "idle", 1)
        assert sessions(fresh_database) == 1
        deadline = time.monotonic() + 30
        while sessions(fresh_database):
            assert time.monotonic() < deadline, "the idle connection was never closed"
            time.sleep(0.1)
        store(storage, "idle", 1)
        assert len(storage.get_logs_for_run("idle")) == 2
