"""Dagster's PostgreSQL storage, with the event log writing on a connection it keeps open.

dagster-postgres stores every event on a new PostgreSQL connection (a ``NullPool``, so that an
idle process holds none). A run stores thousands of events, and Dagster 1.13 writes each
asset-check evaluation on its own, outside event batching: an hour's verdict is two writes,
each on a new connection (about 11 ms a write here, 5 ms of it opening the connection, where a
statement on an open one takes 0.1 ms), and a 30-day backfill records 1,440 verdicts. This
storage keeps one connection open per process for the event log, as ``dagster-webserver`` does
for itself (``optimize_for_webserver``); runs, schedules and everything else are dagster-postgres
unchanged.

The server closes the kept connection once it has been idle for a minute (PostgreSQL 14's
``idle_session_timeout``), so a process that stopped writing, such as a Celery worker between
steps, holds nothing; its next write reconnects.

Select it in ``dagster.yaml`` as ``storage: custom:`` with this module and class and the same
``postgres_db`` fields as ``storage: postgres:``. Every process that reads the instance (the
webserver, the daemon, run workers, Celery workers) then needs ``cz_pipeline`` installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# Threads that use the event log at the same moment (the daemon's, the webserver's) each get a
# connection of their own, closed after use as dagster-postgres does: no new limit, no waiting.
UNLIMITED_OVERFLOW = -1
# Renew the open connection after an hour, so that a long run does not keep one forever.
RECYCLE_SECONDS = 3600
# The server closes a kept connection idle this long (PostgreSQL 14 and later).
IDLE_SESSION_TIMEOUT_MS = 60_000
IDLE_SESSION_TIMEOUT_SINCE = 140000  # server_version_num of PostgreSQL 14


def _close_when_idle(connection: Any, _record: Any) -> None:
    """Ask the server to end the session after IDLE_SESSION_TIMEOUT_MS without a statement."""
    if connection.server_version < IDLE_SESSION_TIMEOUT_SINCE:
        return
    with connection, connection.cursor() as cursor:
        cursor.execute("SET idle_session_timeout = %s", (IDLE_SESSION_TIMEOUT_MS,))


class PostgresEventLogKeepingAConnection(PostgresEventLogStorage):
    """dagster-postgres's event log, on one kept connection instead of one per write."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(
            postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=UNLIMITED_OVERFLOW,
            pool_recycle=RECYCLE_SECONDS,
            # A server restart, or the idle timeout, between two writes costs a reconnect.
            pool_pre_ping=True,
        )
        sqlalchemy.event.listen(self._engine, "connect", _close_when_idle)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class PostgresStorageKeepingAConnection(DagsterPostgresStorage):
    """``storage: postgres:`` with :class:`PostgresEventLogKeepingAConnection` as its event log."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._event_log_storage.dispose()
        self._event_log_storage = PostgresEventLogKeepingAConnection(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pg_config()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PostgresStorageKeepingAConnection:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data,
            get_token_provider_from_config(config_value),
        )
