"""Test harness: a real PostgreSQL, a fresh database per test.

Which server: ``OUTBOX_TEST_DATABASE_URL``, else ``OUTBOX_DATABASE_URL``, else
the embedded server (started on demand, stopped at the end if the tests started
it). Once per session the migrations build a template database; each test that
asks for ``db_url`` or ``conn`` gets its own clone of it (CREATE DATABASE ...
TEMPLATE, ~80 ms), so tests can commit, LISTEN, and run worker processes without
seeing each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """A CLI command run in-process (CliRunner) configures structlog for a process, its
    level filter included; the next test's capture_logs() must not inherit it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL on the server the tests use (its own maintenance database)."""
    url = os.environ.get("OUTBOX_TEST_DATABASE_URL") or os.environ.get("OUTBOX_DATABASE_URL")
    started_here = False
    if not url:
        from outbox import embedded
        from outbox.settings import Settings

        data_dir = Settings().data_dir
        started_here = not embedded.server_status(data_dir).running
        url = embedded.ensure_server(data_dir)
    try:
        yield url
    finally:
        if started_here:
            embedded.stop_server(data_dir)


def _admin(server_url: str) -> psycopg.Connection:
    return psycopg.connect(_with_dbname(server_url, "postgres"), autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """Name of a database migrated to head, used as the template of every test database."""
    from outbox import migrate

    name = f"outbox_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _admin(server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(_with_dbname(server_url, name))
        yield name
    finally:
        with _admin(server_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, migrated database of this test's own."""
    name = f"outbox_t_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield _with_dbname(server_url, name)
    finally:
        with _admin(server_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """URL of an empty database (no migrations run), for migration tests."""
    name = f"outbox_e_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(server_url, name)
    finally:
        with _admin(server_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """A connection to this test's database; whatever is left uncommitted is rolled back."""
    with psycopg.connect(db_url) as c:
        yield c
        c.rollback()


@pytest.fixture
def login(db_url: str) -> Iterator[Any]:
    """login(group) -> URL of a fresh LOGIN role in ``group`` on this test's database.

    Roles are cluster-wide: each gets a unique name, and is dropped (its sessions
    ended first) after the test.
    """
    made: list[str] = []
    admin = psycopg.connect(db_url, autocommit=True)

    def make(group: str) -> str:
        name = f"outbox_t_{group.removeprefix('outbox_')}_{uuid.uuid4().hex[:8]}"
        password = uuid.uuid4().hex
        admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' IN ROLE {group}")
        made.append(name)
        params = conninfo_to_dict(db_url) | {"user": name, "password": password}
        return make_conninfo(**params)

    yield make
    for name in made:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name]
        )
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')
    admin.close()
