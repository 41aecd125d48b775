"""What the CLI commands share: settings, a database connection, time parsing."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import typer

from outbox import ops
from outbox.errors import ValidationError
from outbox.settings import Settings


@contextmanager
def connection(settings: Settings | None = None) -> Iterator[psycopg.Connection]:
    """A connection to the configured database (or the embedded one), committed on success."""
    from outbox.db import resolve_url

    with psycopg.connect(resolve_url(settings or Settings())) as conn:
        yield conn


def parse_duration(text: str) -> timedelta:
    """:func:`outbox.ops.parse_duration`, its error turned into a usage error (exit 2)."""
    try:
        return ops.parse_duration(text)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


def ago(text: str | None) -> datetime | None:
    """A duration counted back from now, or None."""
    return None if text is None else datetime.now(UTC) - parse_duration(text)


def actor() -> str:
    """Who is running the command, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
