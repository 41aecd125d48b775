"""Which PostgreSQL to talk to: the configured one, or the embedded one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is heavy; callers already hold a Settings
    from outbox.settings import Settings


def configured_url(settings: Settings) -> str | None:
    """``OUTBOX_DATABASE_URL``'s value, or None when unset or empty (the embedded server)."""
    if settings.database_url is None:
        return None
    # An empty value (OUTBOX_DATABASE_URL= in a .env) means "not configured",
    # not "connect with libpq's defaults".
    return settings.database_url.get_secret_value().strip() or None


def resolve_url(settings: Settings) -> str:
    """The libpq URL to use: ``OUTBOX_DATABASE_URL``, or the embedded server (started on demand)."""
    url = configured_url(settings)
    if url is not None:
        return url
    from outbox.embedded import ensure_server

    return ensure_server(settings.data_dir)


def sqlalchemy_url(url: str) -> str:
    """The same URL spelled for SQLAlchemy's psycopg 3 dialect."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    # A key=value conninfo string: SQLAlchemy takes it through the query string.
    from urllib.parse import quote

    return "postgresql+psycopg:///?" + "&".join(
        f"{k}={quote(str(v))}" for k, v in _conninfo(url).items()
    )


def _conninfo(url: str) -> Mapping[str, object]:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(url)
    except ProgrammingError:
        # psycopg's message quotes the string, password and all: never repeat it.
        raise ValueError(
            "the database URL is neither a postgresql:// URL nor a key=value conninfo string"
        ) from None
