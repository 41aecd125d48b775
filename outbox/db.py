"""Which PostgreSQL to talk to: the configured one, or the embedded one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is heavy; callers already hold a Settings
    from outbox.settings import Settings


def configured_url(settings: Settings) -> str | None:
    """``OUTBOX_DATABASE_URL``'s value, or None when unset or empty (the embedded server).

    Raises ConfigError when the value is neither a postgresql:// URL nor a
    key=value conninfo string: said here, at the edge, rather than as a driver
    error deep inside the first connection (which would quote the value).
    """
    if settings.database_url is None:
        return None
    # An empty value (OUTBOX_DATABASE_URL= in a .env) means "not configured",
    # not "connect with libpq's defaults".
    url = settings.database_url.get_secret_value().strip() or None
    if url is not None:
        _conninfo(url, "OUTBOX_DATABASE_URL")
    return url


def resolve_url(settings: Settings) -> str:
    """The libpq URL to use: ``OUTBOX_DATABASE_URL``, or the embedded server (started on demand)."""
    url = configured_url(settings)
    if url is not None:
        return url
    from outbox.embedded import ensure_server

    return ensure_server(settings.data_dir)


def webhooks_url(settings: Settings) -> str:
    """The webhook receiver's URL: ``OUTBOX_WEBHOOKS_DATABASE_URL``, else :func:`resolve_url`.

    Raises ConfigError naming the setting when its value is not a libpq URL or
    key=value string. An empty value means unset, as for ``OUTBOX_DATABASE_URL``.
    """
    if settings.webhooks_database_url is not None:
        url = settings.webhooks_database_url.get_secret_value().strip()
        if url:
            _conninfo(url, "OUTBOX_WEBHOOKS_DATABASE_URL")
            return url
    return resolve_url(settings)


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


def describe(url: str) -> str:
    """Where ``url`` points, for a message: ``127.0.0.1:5432, database shop, user app``.

    Never the password. libpq's defaults (local socket, the OS user's name) are
    said as such rather than guessed.
    """
    params = _conninfo(url)
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = str(params.get("port") or "5432")
    if host and not host.startswith("/"):
        where = f"{host}:{port}"
    else:
        where = f"{host or 'the local socket'} (port {port})"
    database = params.get("dbname")
    user = params.get("user")
    out = where
    if database:
        out += f", database {database}"
    if user:
        out += f", user {user}"
    return out


def _conninfo(url: str, name: str = "the database URL") -> Mapping[str, object]:
    """libpq's parse of ``url``; ConfigError naming ``name`` (never the value) if it fails."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from outbox.errors import ConfigError

    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", url)
    if scheme and scheme.group(1) not in ("postgresql", "postgres"):
        what = (
            "a SQLAlchemy URL"
            if scheme.group(1).startswith("postgresql+")
            else "not a PostgreSQL URL"
        )
        raise ConfigError(
            f"{name} starts with {scheme.group(0)}, {what}; write it as a libpq "
            "URL: postgresql://user:password@host:5432/dbname"
        )
    try:
        return conninfo_to_dict(url)
    except ProgrammingError:
        # psycopg's message quotes the string, password and all: never repeat it.
        raise ConfigError(
            f"{name} is neither a postgresql:// URL nor a key=value conninfo "
            "string (value not shown: it may hold a password); write it like "
            "postgresql://user:password@host:5432/dbname or host=... dbname=... user=..."
        ) from None
