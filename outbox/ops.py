"""Operations: what ``outbox status``, ``outbox inspect`` and ``outbox prune`` do.

The CLI (``outbox/cli/ops.py``) only formats; these functions take a
connection and return plain data, so tests and tools call them directly.

Retention keeps the queue's tables small so that the cost of a claim does not
grow with history (docs/operations.md, "Retention"). It removes, older than a
cutoff: finished deliveries (sent, delivered, dead, expired, cancelled,
suppressed) with their events, then notifications left with no delivery, then
events that belong to no notification. It works in batches over primary-key
ranges, each batch its own short transaction that skips rows someone has
locked, so it never blocks a claim and never holds many locks. Unfinished rows,
and everything of a notification that still has an unfinished or recent
delivery, are kept however old.

A note on idempotency: a message id is remembered as long as its notification
is kept. Enqueueing a message id again after its notification was pruned
creates a new notification, so keep history longer than any producer retries.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row

from outbox.errors import NotFound, ValidationError
from outbox.sql import query

__all__ = [
    "FINISHED",
    "PruneResult",
    "Pruner",
    "inspect",
    "jsonable",
    "parse_age",
    "parse_duration",
    "prune",
    "prune_exclusive",
    "status",
    "try_lock",
    "unlock",
]

#: Statuses a delivery never leaves on its own: what retention may delete.
FINISHED = ("sent", "delivered", "dead", "expired", "cancelled", "suppressed")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """'90s', '15m', '12h', '30d', '2w' -> timedelta; ValidationError naming the value otherwise.

    The one parser for every duration a person types: the CLI's ``--older-than``
    and ``--since``, and the ``OUTBOX_PRUNE_OLDER_THAN`` setting. ``field`` names
    the option or setting in the error.
    """
    match = _DURATION.match(text.strip())
    if not match:
        raise ValidationError(
            f"{text!r} is not a duration like 30s, 15m, 12h, 30d or 2w", field=field
        )
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def parse_age(text: str) -> timedelta:
    """:func:`parse_duration` for ``older_than`` (the name workers/process.py imports)."""
    return parse_duration(text, field="older_than")


def jsonable(value: Any) -> Any:
    """``value`` in plain JSON types: what every ``--json`` prints.

    Timestamps become ISO 8601 strings in UTC (``2026-12-01T09:30:00.123456+00:00``)
    whatever the session's time zone; ids and counts stay numbers; NUMERIC
    becomes an int when whole, else a float; dict keys become strings.
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (UUID, Path)):
        return str(value)
    return value


# -- status and inspect (synchronous: the CLI's connection) ---------------------------------


def _rows(conn: Any, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params or {})
        return cur.fetchall()


def status(conn: Any) -> dict[str, Any]:
    """The queue at a glance: depth, oldest due, dead letters, and breakers if installed.

    Returns ``{"queue": [...], "oldest": [...], "dead": [...], "breakers": [...] | None}``;
    ``breakers`` is None when the schema has no ``outbox.provider_breakers`` table.
    """
    has_breakers = _rows(conn, "status_breaker_table")[0]["present"]
    return {
        "queue": _rows(conn, "status_queue"),
        "oldest": _rows(conn, "status_oldest"),
        "dead": _rows(conn, "status_dead"),
        "breakers": _rows(conn, "status_breakers") if has_breakers else None,
    }


def inspect(conn: Any, message_id: str) -> dict[str, Any]:
    """A notification by message id, its deliveries and its whole timeline of events.

    Raises NotFound naming the message id if there is no such notification
    (never enqueued, or already pruned).
    """
    found = _rows(conn, "inspect_notification", {"message_id": message_id})
    if not found:
        raise NotFound(
            f"no notification with message id {message_id!r} (never enqueued, or pruned)"
        )
    notification = found[0]
    params = {"notification_id": notification["id"]}
    return {
        "notification": notification,
        "deliveries": _rows(conn, "inspect_deliveries", params),
        "timeline": _rows(conn, "inspect_timeline", params),
    }


# -- retention (asynchronous: the worker's connection; the CLI runs it with asyncio) ------


@dataclass(slots=True)
class PruneResult:
    """What one prune removed."""

    cutoff: datetime | None = None
    deliveries: int = 0
    notifications: int = 0
    events: int = 0
    batches: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "deliveries": self.deliveries,
            "notifications": self.notifications,
            "events": self.events,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


async def _one(conn: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        row = await cur.fetchone()
    assert row is not None  # every retention query returns exactly one row
    return row


async def _ranges(
    conn: Any,
    name: str,
    cutoff: datetime,
    batch_size: int,
    pause_seconds: float,
    result: PruneResult,
    each: Any = None,
) -> None:
    """Run the batch query ``name`` over successive id ranges until it passes the cutoff.

    Ids grow with creation time, so a range whose oldest row was created after
    the cutoff means every later range was too: the run stops there instead of
    reading the recent part of the table.
    """
    after = 0
    while True:
        async with conn.transaction():
            row = await _one(
                conn, name, {"after_id": after, "cutoff": cutoff, "batch_size": batch_size}
            )
            if each is not None:
                await each(row)
        result.batches += 1
        result.deliveries += row.get("deliveries", 0)
        result.notifications += row.get("notifications", 0)
        result.events += row.get("events", 0)
        if row["last_id"] is None or row["oldest_created_at"] >= cutoff:
            return
        after = row["last_id"]
        if pause_seconds:
            await asyncio.sleep(pause_seconds)


async def prune(
    conn: Any, *, older_than: timedelta, batch_size: int = 1000, pause_seconds: float = 0.0
) -> PruneResult:
    """Delete finished history older than ``older_than`` in batches; what was removed.

    ``conn`` is an async psycopg connection in autocommit mode: each batch is its
    own short transaction (at most ``batch_size`` deliveries looked at). Pass
    ``pause_seconds`` to leave the disks a breather between batches. Run it
    under :class:`Pruner` (or ``outbox prune``) so that only one runs at a time.
    """
    if older_than <= timedelta(0):
        raise ValidationError(f"older_than must be positive, got {older_than}", field="older_than")
    if batch_size < 1:
        raise ValidationError(
            f"batch_size must be at least 1, got {batch_size}", field="batch_size"
        )
    began = time.monotonic()
    cutoff = (await _one(conn, "prune_cutoff", {"older_than_seconds": older_than.total_seconds()}))[
        "cutoff"
    ]
    result = PruneResult(cutoff=cutoff)

    async def notifications_of(row: dict[str, Any]) -> None:
        # Same transaction as the batch: a notification goes with its last delivery.
        if row["notification_ids"]:
            gone = await _one(conn, "prune_notifications", {"ids": row["notification_ids"]})
            result.notifications += gone["notifications"]
            result.events += gone["events"]

    await _ranges(
        conn, "prune_deliveries", cutoff, batch_size, pause_seconds, result, notifications_of
    )
    await _ranges(conn, "prune_orphan_notifications", cutoff, batch_size, pause_seconds, result)
    await _ranges(conn, "prune_standalone_events", cutoff, batch_size, pause_seconds, result)
    result.seconds = time.monotonic() - began
    return result


async def try_lock(conn: Any) -> bool:
    """Take the retention lock (session-level advisory lock) if it is free."""
    return bool((await _one(conn, "prune_try_lock", {}))["locked"])


async def unlock(conn: Any) -> None:
    """Release the retention lock taken by :func:`try_lock` on this connection."""
    await _one(conn, "prune_unlock", {})


async def prune_exclusive(
    conn: Any, *, older_than: timedelta, batch_size: int = 1000, pause_seconds: float = 0.0
) -> PruneResult | None:
    """:func:`prune` under the retention lock; None if another session holds it."""
    if not await try_lock(conn):
        return None
    try:
        return await prune(
            conn, older_than=older_than, batch_size=batch_size, pause_seconds=pause_seconds
        )
    finally:
        await unlock(conn)


@dataclass(slots=True)
class Pruner:
    """The workers' periodic retention: every ``interval_seconds``, one worker prunes.

    Off unless ``prune_older_than`` is set. Every worker may have one; the
    advisory lock lets only one of them work at a time, the others skip.
    """

    older_than: timedelta
    batch_size: int = 1000
    interval_seconds: float = 600.0
    pause_seconds: float = 0.0
    last: PruneResult | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.older_than <= timedelta(0):
            raise ValidationError(
                f"older_than must be positive, got {self.older_than}", field="older_than"
            )
        if self.batch_size < 1:
            raise ValidationError(
                f"batch_size must be at least 1, got {self.batch_size}", field="batch_size"
            )
        if self.interval_seconds <= 0:
            raise ValidationError(
                f"interval_seconds must be positive, got {self.interval_seconds}",
                field="interval_seconds",
            )

    async def run_once(self, conn: Any, *, log: Any = None) -> PruneResult | None:
        """Prune now if no one else is; the result, or None if another session held the lock."""
        result = await prune_exclusive(
            conn,
            older_than=self.older_than,
            batch_size=self.batch_size,
            pause_seconds=self.pause_seconds,
        )
        if result is not None:
            self.last = result
            if log is not None:
                log.info("retention.pruned", **result.as_dict())
        elif log is not None:
            log.debug("retention.skipped", reason="another session holds the retention lock")
        return result
