"""What the CLI commands share: settings, a database connection, time parsing."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import typer

from outbox.settings import Settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@contextmanager
def connection(settings: Settings | None = None) -> Iterator[psycopg.Connection]:
    """A connection to the configured database (or the embedded one), committed on success."""
    from outbox.db import resolve_url

    with psycopg.connect(resolve_url(settings or Settings())) as conn:
        yield conn


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '12h', '7d', '2w' -> timedelta; BadParameter naming the value otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def ago(text: str | None) -> datetime | None:
    """A duration counted back from now, or None."""
    return None if text is None else datetime.now(UTC) - parse_duration(text)


def actor() -> str:
    """Who is running the command, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
