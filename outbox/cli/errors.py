"""What ``outbox`` prints when a command fails: ``error: …`` and a hint, never a traceback.

Every failure a person can cause and fix — a database that is down or was never
migrated, a setting with bad syntax, a provider without its credentials, bad
input — is turned into one or two lines on stderr and exit code 1 (typer keeps
2 for usage errors). Anything else is a bug and keeps its traceback, for the
bug report. ``outbox --debug`` or ``OUTBOX_DEBUG=1`` prints the traceback as
well (redacted like the messages).

No message carries a secret: each is built from names and non-secret values,
and every line still goes through the redaction of the configured secrets (the
database password, provider keys) before it is printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING, Any

import psycopg
import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from outbox.errors import ConfigError, OutboxError, ProviderConfigError, SchemaError

if TYPE_CHECKING:  # pydantic-settings loads only when a failure needs it
    from outbox.settings import Settings

_FALSE = ("", "0", "false", "no", "off")
# psycopg's connection failure: '… at "127.0.0.1", port 1 failed: Connection refused'.
_REASON = re.compile(r".*failed:\s*(?:FATAL:\s*)?(.+)$")
# Errors that mean the outbox schema (or part of it) is missing from the database.
_MISSING_SCHEMA = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedColumn,
)


class OutboxGroup(TyperGroup):
    """The root command group: runs a command, and explains a failure the user can fix."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, Exit, Abort):
            raise  # usage errors, typer.Exit(n), Ctrl-C: typer reports those itself
        except Exception as exc:
            debug = bool(ctx.params.get("debug")) or debug_from_env()
            lines = explain(exc)
            if lines is None:
                raise  # not a mistake we know: a bug, whose traceback is wanted
            secrets = _secrets()
            if debug:
                text = "".join(traceback.format_exception(exc))
                sys.stderr.write(redact(text, secrets))
            for line in lines:
                typer.echo(redact(line, secrets), err=True)
            raise Exit(1) from None


def debug_from_env() -> bool:
    """Whether ``OUTBOX_DEBUG`` asks for tracebacks (1, true, yes, on)."""
    return os.environ.get("OUTBOX_DEBUG", "").strip().lower() not in _FALSE


def explain(exc: BaseException) -> list[str] | None:
    """The ``error:`` line (and maybe a ``hint:`` line) for ``exc``; None if it is a bug."""
    orig = getattr(exc, "orig", None)
    if type(exc).__module__.startswith("sqlalchemy") and isinstance(orig, psycopg.Error):
        exc = orig  # SQLAlchemy wraps the driver's error in 100 lines of its own
    if isinstance(exc, SchemaError):
        return [f"error: {exc}"]
    if isinstance(exc, ProviderConfigError):
        return [
            f"error: {exc}",
            "hint: set it in the environment or in .env; docs/providers.md lists the "
            "settings of each provider",
        ]
    if isinstance(exc, ConfigError | OutboxError):
        return [f"error: {exc}"]
    if isinstance(exc, psycopg.OperationalError):
        return _unreachable(exc)
    if isinstance(exc, _MISSING_SCHEMA):
        return _schema_missing(exc)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return [
            f"error: {_first_line(exc)}",
            "hint: connect as a role with the rights this command needs (docs/operations.md, "
            "Roles); `outbox migrate` runs as the schema owner",
        ]
    from pydantic import ValidationError as PydanticValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, PydanticValidationError) and exc.title == "Settings":
        return _settings_invalid(exc)
    if isinstance(exc, SettingsError):
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"OUTBOX_{field.group(1).upper()}" if field else "a setting"
        return [
            f"error: {name} cannot be parsed ({exc.__cause__ or 'not valid JSON'})",
            "hint: fix it in the environment or in .env",
        ]
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        from outbox.migrate import head

        return [
            f"error: {exc}",
            f"hint: revisions run from base to {head()}; `outbox migrate` alone goes to the newest",
        ]
    return None


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced (longest first, so none is half-replaced)."""
    from outbox.logs import REDACTED  # the same mark as in the logs

    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _secrets() -> list[str]:
    from outbox.settings import Settings

    try:
        return Settings().secret_values()
    except Exception:  # noqa: BLE001 - settings that do not load have nothing to redact yet
        return []


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _settings() -> Settings | None:
    from outbox.settings import Settings

    try:
        return Settings()
    except Exception:  # noqa: BLE001 - the failure being explained may be this one
        return None


def _target(exc: psycopg.Error) -> tuple[str, bool]:
    """Where the failed connection went (no password), and whether it was the embedded server."""
    from outbox.db import configured_url, describe

    settings = _settings()
    embedded = False
    if settings is not None:
        with contextlib.suppress(ConfigError):
            embedded = configured_url(settings) is None
    pgconn = getattr(exc, "pgconn", None)
    if pgconn is not None and pgconn.port:
        # libpq's own view of the attempt: exactly what was tried, whatever the source.
        host, port = (pgconn.host or b"").decode(), pgconn.port.decode()
        where = f"{host}:{port}" if host and not host.startswith("/") else f"{host} (port {port})"
        database, user = (pgconn.db or b"").decode(), (pgconn.user or b"").decode()
        return f"{where}, database {database}, user {user}", embedded
    if settings is not None and not embedded:
        try:
            return describe(configured_url(settings) or ""), embedded
        except ConfigError:
            pass
    return "the database", embedded


def _unreachable(exc: psycopg.OperationalError) -> list[str]:
    where, embedded = _target(exc)
    lines = str(exc).strip().splitlines()
    reason = next(
        (m.group(1).strip() for line in reversed(lines) if (m := _REASON.search(line))),
        lines[0] if lines else "no reason given",
    )
    if "does not exist" in reason and reason.startswith("database"):
        hint = (
            "hint: create that database, or point OUTBOX_DATABASE_URL at an existing one; "
            "then run `outbox migrate`"
        )
    elif (
        "authentication" in reason
        or reason.startswith("role")
        or "pg_hba.conf" in reason
        or "password" in reason
    ):
        hint = "hint: check the user and password in OUTBOX_DATABASE_URL"
    elif embedded:
        hint = "hint: `outbox db status` shows the embedded server's state and log"
    else:
        hint = (
            "hint: is PostgreSQL running there and accepting connections? Check "
            "OUTBOX_DATABASE_URL (unset, Outbox runs its own embedded server)"
        )
    return [f"error: cannot connect to PostgreSQL at {where}: {reason}", hint]


def _schema_missing(exc: psycopg.Error) -> list[str]:
    """A query met a missing table or function: say whether the schema is absent or old."""
    from outbox.db import resolve_url
    from outbox.migrate import check

    settings = _settings()
    if settings is not None:
        try:
            check(resolve_url(settings))
        except SchemaError as schema:
            return [f"error: {schema}"]
        except Exception:  # noqa: BLE001 - the original error is still worth showing
            pass
    return [
        f"error: {_first_line(exc)}",
        "hint: the outbox schema looks incomplete: run `outbox migrate`",
    ]


def _settings_invalid(exc: Any) -> list[str]:
    """One line per bad setting: its variable, its value (unless secret), what it should be."""
    from pydantic import SecretStr

    from outbox.settings import Settings

    out = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else ""
        name = f"OUTBOX_{field.upper()}" if field else "a setting"
        info = Settings.model_fields.get(field)
        secret = field == "" or (info is not None and "SecretStr" in str(info.annotation))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        value = error.get("input")
        if secret or isinstance(value, SecretStr) or not isinstance(value, str | int | float):
            out.append(f"error: {name}: {message}")
        else:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...'"
            out.append(f"error: {name}={shown}: {message}")
    out.append(
        "hint: fix it in the environment or in .env (outbox/settings.py describes each setting)"
    )
    return out
