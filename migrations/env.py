"""Alembic environment for Outbox.

The connection comes from, in order: ``config.attributes["connection"]`` (set
by :func:`outbox.migrate.upgrade` or by an application embedding our
migrations), the ``sqlalchemy.url`` option, or the Outbox settings
(``OUTBOX_DATABASE_URL`` or the embedded server).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

config = context.config
VERSION_TABLE = config.get_main_option("version_table") or "outbox_alembic_version"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from outbox.db import resolve_url, sqlalchemy_url
        from outbox.settings import Settings

        url = sqlalchemy_url(resolve_url(Settings()))
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("Outbox migrations run online only (they install PL/pgSQL functions).")
run_migrations_online()
