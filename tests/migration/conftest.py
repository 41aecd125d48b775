"""Fixtures of the migration tests: a database built from the current sql/ files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from outbox import sql


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture
def current_db_url(server_url: str) -> Iterator[str]:
    """URL of a database of its own built by ``sql.install_current`` (no alembic)."""
    name = f"outbox_c_{uuid.uuid4().hex[:12]}"
    admin_url = _with_dbname(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _with_dbname(server_url, name)
        with psycopg.connect(url) as conn:
            sql.install_current(conn)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
