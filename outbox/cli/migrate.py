"""``outbox migrate``: bring the schema to the newest version (or another)."""

from __future__ import annotations

from typing import Annotated

import typer

from outbox.errors import SchemaAhead, SchemaError
from outbox.settings import Settings


def migrate(
    revision: Annotated[
        str,
        typer.Argument(help="Target revision: head (default), or one to downgrade to, e.g. base."),
    ] = "head",
    downgrade: Annotated[
        bool,
        typer.Option(
            "--downgrade",
            help="Downgrade to REVISION (base removes the outbox schema and its rows).",
        ),
    ] = False,
) -> None:
    """Upgrade the outbox schema to head (idempotent).

    Uses OUTBOX_DATABASE_URL, or the embedded server when it is unset.
    """
    from outbox import migrate as m
    from outbox.db import resolve_url

    url = resolve_url(Settings())
    try:
        m.check(url)
    except SchemaAhead:
        raise  # a newer release wrote it: alembic would only say it cannot find the revision
    except SchemaError:
        pass  # older, or not installed: what migrating is for
    before = m.current(url)
    if downgrade:
        m.downgrade(url, revision)
    else:
        m.upgrade(url, revision)
    after = m.current(url)
    typer.echo(f"outbox schema: {before or 'not installed'} -> {after or 'not installed'}")
