"""Schema migrations, driven by alembic with Outbox's own version table.

``outbox migrate`` calls :func:`upgrade`. An application that runs its own
alembic can instead call :func:`upgrade` with one of its SQLAlchemy
connections (see migrations/README.md): Outbox's version table
(``outbox_alembic_version``) never collides with the application's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

import outbox.migrations
from outbox.db import sqlalchemy_url
from outbox.errors import SchemaAhead, SchemaBehind, SchemaNotInstalled
from outbox.sql import query

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


def _run(target: str | Connection, action: Callable[[Config, str], None], revision: str) -> None:
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


@functools.cache
def _scripts() -> ScriptDirectory:
    # Reading the migration scripts imports each of them: once per process is enough.
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision shipped with this version of Outbox."""
    rev = _scripts().get_current_head()
    assert rev is not None
    return rev


def check(url: str) -> str | None:
    """Refuse a database whose outbox schema is not at :func:`head`.

    What the worker, the webhook receiver and the CLI commands that read the
    schema call before anything else: one query on a connection of its own.
    Returns the revision, or None when this role may not read the version table
    (a role outside the outbox roles, which migration 0006 grants it) and the
    outbox schema exists: the revision cannot be checked then, only its presence.

    Raises SchemaNotInstalled, SchemaBehind or SchemaAhead (all SchemaError),
    whose messages say what to run; psycopg.OperationalError if the database
    cannot be reached.
    """
    with psycopg.connect(url) as conn:
        database = conn.info.dbname
        try:
            rows = conn.execute(query("schema_revision")).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
            installed = conn.execute(query("schema_installed")).fetchone()
            if installed is not None and installed[0]:
                return None
            rows = []
    return compare([str(r[0]) for r in rows], database=database)


def compare(revisions: list[str], *, database: str) -> str:
    """The database's revision if it is :func:`head`; else the SchemaError that says why not.

    A revision this Outbox's migrations do not contain was written by a newer
    release (or by something else entirely): refused too, because this code
    would run against tables it does not know.
    """
    needed = head()
    if revisions == [needed]:
        return needed
    if not revisions:
        raise SchemaNotInstalled(
            f"the outbox schema is not installed in database {database!r}: run `outbox migrate`",
            database=database,
            current=None,
            needed=needed,
        )
    current = ", ".join(revisions)
    if all(_known(rev) for rev in revisions):
        raise SchemaBehind(
            f"database {database!r} is at revision {current}, this Outbox needs {needed}: "
            "run `outbox migrate`",
            database=database,
            current=current,
            needed=needed,
        )
    raise SchemaAhead(
        f"database {database!r} is at revision {current}, which this Outbox does not know "
        f"(it needs {needed}): a newer Outbox migrated it; run that release, or upgrade "
        "this one",
        database=database,
        current=current,
        needed=needed,
    )


def _known(revision: str) -> bool:
    """Whether ``revision`` is one of this Outbox's migrations."""
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic's "Can't locate revision" and its kin
        return False
