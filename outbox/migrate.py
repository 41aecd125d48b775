"""Schema migrations, driven by alembic with Outbox's own version table.

``outbox migrate`` calls :func:`upgrade`. An application that runs its own
alembic can instead call :func:`upgrade` with one of its SQLAlchemy
connections (see migrations/README.md): Outbox's version table
(``outbox_alembic_version``) never collides with the application's.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

from outbox.db import sqlalchemy_url

import outbox.migrations

# migrations/ in a checkout, outbox/migrations/ in an installed wheel.
MIGRATIONS_DIR = Path(outbox.migrations.__file__).resolve().parent
VERSION_TABLE = "outbox_alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """The alembic Config of Outbox's migrations, bound to ``connection`` if given.

    Built in code rather than read from alembic.ini, which an installed wheel
    does not carry (the checkout's alembic.ini is for running ``alembic`` by hand).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _run(target: str | Connection, action, revision: str) -> None:
    if isinstance(target, Connection):
        action(alembic_config(target), revision)
        return
    engine = create_engine(sqlalchemy_url(target), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            action(alembic_config(conn), revision)
    finally:
        engine.dispose()


def upgrade(target: str | Connection, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (a libpq URL or a SQLAlchemy connection)."""
    _run(target, command.upgrade, revision)


def downgrade(target: str | Connection, revision: str) -> None:
    """Downgrade to ``revision`` (``base`` removes the outbox schema and its rows)."""
    _run(target, command.downgrade, revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None if Outbox was never installed."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision shipped with this version of Outbox."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev
