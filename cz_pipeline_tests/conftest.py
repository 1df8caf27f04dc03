"""Shared fixtures: a real PostgreSQL database per test, created and dropped around it."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from moto.server import ThreadedMotoServer

# The server the tests use; CI and this machine run one at this address with trust auth.
ADMIN_URL = os.environ.get("CZ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def new_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on leaving."""
    name = f"cz_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield _database_url(name)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    with new_database() as url:
        yield url


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """An S3 API on 127.0.0.1 at a free port, for this module's tests."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
