"""The public API: enqueue and register inside the caller's transaction.

Every function takes the caller's connection — a psycopg 3 ``Connection``, a
SQLAlchemy ``Connection`` or ``Session`` (on the psycopg or psycopg2 driver) —
and runs in the transaction that is open on it. Nothing here commits: the
caller's commit makes the notification real (and wakes the workers); the
caller's rollback makes it never have existed.

Each call is one round trip to one SQL function (``sql/functions/``), the same
functions a producer in any language calls, so the checks are the same.

Bad input raises :class:`outbox.errors.ValidationError` (or a subclass) naming
the field and value, and writes nothing. As with any failed statement,
PostgreSQL then requires the caller's transaction to be rolled back (or a
savepoint to be used around the call).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, time
from typing import Any

from outbox import errors
from outbox.sql import query

__all__ = [
    "activate_template",
    "cancel",
    "create_template",
    "deactivate_device",
    "enqueue",
    "enqueue_many",
    "register_device",
    "set_preference",
    "upsert_recipient",
]

# SQLSTATEs raised by the SQL functions (class OB), mapped to our exceptions.
_SQLSTATE_ERRORS: dict[str, type[errors.OutboxError]] = {
    "OB001": errors.ValidationError,
    "OB002": errors.UnknownRecipient,
    "OB003": errors.UnknownTemplate,
    "OB004": errors.UnknownChannel,
    "OB005": errors.IllegalTransition,
    "OB006": errors.NotFound,
}


def _dbapi_connection(conn: Any) -> Any:
    """The DBAPI connection under ``conn``, with the caller's transaction begun."""
    try:
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return conn
    if isinstance(conn, Session):
        # Session.connection() begins the session's transaction if needed.
        return conn.connection().connection
    if isinstance(conn, SAConnection):
        if not conn.in_transaction():
            # Begin through SQLAlchemy so that its commit()/rollback() cover our rows.
            conn.begin()
        return conn.connection
    return conn


def _call(conn: Any, name: str, params: Mapping[str, Any]) -> Any:
    """Run the named query on the caller's connection; return the single value."""
    cur = _dbapi_connection(conn).cursor()
    try:
        cur.execute(query(name), params)
        row = cur.fetchone()
    except Exception as exc:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state in _SQLSTATE_ERRORS:
            diag = getattr(exc, "diag", None)
            message = getattr(diag, "message_primary", None) or str(exc)
            field = getattr(diag, "column_name", None)
            cls = _SQLSTATE_ERRORS[state]
            err = cls(message, field=field) if issubclass(cls, errors.ValidationError) else cls(message)
            raise err from exc
        raise
    finally:
        cur.close()
    if row is None:
        return None
    # The caller's connection may use any row factory (tuples, dicts, namedtuples).
    return next(iter(row.values())) if isinstance(row, Mapping) else row[0]


def _json(value: Any, field: str) -> str:
    try:
        return json.dumps(value, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise errors.ValidationError(f"{field} is not JSON-serialisable: {exc}", field=field) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _channels(channels: str | Sequence[str] | None) -> list[str] | None:
    if channels is None:
        return None
    return [channels] if isinstance(channels, str) else list(channels)


def enqueue(
    conn: Any,
    message_id: str,
    *,
    template: str,
    recipient: str | None = None,
    data: Mapping[str, Any] | None = None,
    channels: str | Sequence[str] | None = None,
    address: str | None = None,
    category: str | None = None,
    priority: int = 0,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> int:
    """Enqueue a notification in the caller's transaction; return its id.

    ``message_id`` is the idempotency key: enqueueing it again returns the first
    notification's id and changes nothing. Give ``recipient`` (an app user id
    registered with :func:`upsert_recipient`) or ``address`` (an email address
    or E.164 number, one channel). ``channels`` defaults to every channel the
    template has and the recipient can receive; push fans out to each active
    device.
    """
    return _call(conn, "enqueue", {
        "message_id": message_id, "recipient": recipient, "template": template,
        "data": _json({} if data is None else data, "data"), "channels": _channels(channels),
        "address": address, "category": category, "priority": priority,
        "send_at": send_at, "expires_at": expires_at,
    })


def enqueue_many(conn: Any, notifications: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue many notifications in one round trip; return their ids in order.

    Each item is a mapping with :func:`enqueue`'s keyword arguments
    (``message_id``, ``template``, ``recipient``, ``data``, ...). One bad item
    fails the whole call (nothing written).
    """
    items = []
    for item in notifications:
        unknown = set(item) - _ENQUEUE_KEYS
        if unknown:
            raise errors.ValidationError(
                f"unknown enqueue field(s) {sorted(unknown)}; expected some of {sorted(_ENQUEUE_KEYS)}",
                field=sorted(unknown)[0],
            )
        items.append({k: (_channels(v) if k == "channels" else v) for k, v in item.items()})
    if not items:
        return []
    return list(_call(conn, "enqueue_many", {"items": _json(items, "notifications")}))


_ENQUEUE_KEYS = {
    "message_id", "template", "recipient", "data", "channels", "address", "category",
    "priority", "send_at", "expires_at",
}


def upsert_recipient(
    conn: Any,
    recipient: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    timezone: str | None = None,
    quiet_hours: tuple[time, time] | None = None,
) -> int:
    """Create or update the recipient with the app's user id ``recipient``; return its id.

    ``None`` leaves a field unchanged; ``""`` clears email or phone. ``phone`` is
    E.164 (``+14155550123``), ``timezone`` an IANA name, ``quiet_hours`` a
    (start, end) pair of local times that may wrap midnight.
    """
    start, end = quiet_hours if quiet_hours is not None else (None, None)
    return _call(conn, "upsert_recipient", {
        "recipient": recipient, "email": email, "phone": phone, "locale": locale,
        "timezone": timezone, "quiet_start": start, "quiet_end": end,
    })


def register_device(
    conn: Any, recipient: str, token: str, platform: str, *, environment: str = "production"
) -> int:
    """Register push ``token`` (``platform`` apns or fcm) for ``recipient``; return the device id.

    A token already known moves to this recipient and is reactivated.
    """
    return _call(conn, "register_device", {
        "recipient": recipient, "token": token, "platform": platform, "environment": environment,
    })


def deactivate_device(conn: Any, token: str, reason: str = "deactivated by the application") -> bool:
    """Stop sending to ``token``; False if it was unknown or already inactive."""
    return bool(_call(conn, "deactivate_device", {"token": token, "reason": reason}))


def set_preference(
    conn: Any, recipient: str, channel: str, *, opted_in: bool, category: str = "*"
) -> None:
    """Opt ``recipient`` in or out of ``channel`` for ``category`` (``"*"``: every category)."""
    _call(conn, "set_preference", {
        "recipient": recipient, "channel": channel, "opted_in": opted_in, "category": category,
    })


def cancel(conn: Any, message_id: str, reason: str = "cancelled by the application") -> int:
    """Cancel the pending deliveries of ``message_id``; return how many were cancelled.

    Deliveries already sent or in flight are not touched. Raises
    :class:`~outbox.errors.NotFound` if no notification has that message id.
    """
    return _call(conn, "cancel", {"message_id": message_id, "reason": reason})


def create_template(
    conn: Any,
    key: str,
    channel: str,
    body: str,
    *,
    subject: str | None = None,
    html_body: str | None = None,
    title: str | None = None,
    locale: str = "default",
    activate: bool = True,
) -> int:
    """Add a version of template ``key`` for ``channel``; return its version number.

    Unchanged content creates nothing and returns the newest version. With
    ``activate`` (the default) the new version becomes the one used for sends.
    """
    return _call(conn, "create_template", {
        "key": key, "channel": channel, "body": body, "subject": subject, "html_body": html_body,
        "title": title, "locale": locale, "activate": activate,
    })


def activate_template(
    conn: Any, key: str, channel: str, version: int, *, locale: str = "default",
    actor: str | None = None,
) -> None:
    """Make ``version`` the active version of a template (rollback); recorded as an event."""
    _call(conn, "activate_template", {
        "key": key, "channel": channel, "version": version, "locale": locale, "actor": actor,
    })
