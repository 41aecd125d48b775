"""The dead-letter queue: a status, not another system. List, requeue, purge.

Each function runs in the caller's transaction (the CLI commits).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from outbox.errors import ValidationError
from outbox.sql import query


def _filters(
    delivery_ids: Sequence[int] | None,
    message_ids: Sequence[str] | None,
    channel: str | None,
    reason: str | None,
    since: datetime | None,
    before: datetime | None,
) -> dict[str, Any]:
    if channel is not None and channel not in ("email", "sms", "push"):
        raise ValidationError(
            f"unknown channel {channel!r} (expected email, sms or push)", field="channel"
        )
    return {
        "ids": list(delivery_ids) if delivery_ids else None,
        "message_ids": list(message_ids) if message_ids else None,
        "channel": channel,
        "reason": reason,
        "since": since,
        "before": before,
    }


def list_dead(
    conn: Any,
    *,
    delivery_ids: Sequence[int] | None = None,
    message_ids: Sequence[str] | None = None,
    channel: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Dead deliveries matching every given filter, newest first."""
    params = _filters(delivery_ids, message_ids, channel, reason, since, before) | {"limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("dlq_list"), params)
        return cur.fetchall()


def requeue(
    conn: Any,
    *,
    actor: str,
    delivery_ids: Sequence[int] | None = None,
    message_ids: Sequence[str] | None = None,
    channel: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    before: datetime | None = None,
    everything: bool = False,
) -> int:
    """Return matching dead deliveries to pending with attempts reset; how many.

    At least one filter is required unless ``everything`` is set, so that a
    slip of the keyboard cannot resend the whole DLQ.
    """
    params = _filters(delivery_ids, message_ids, channel, reason, since, before)
    if not everything and all(v is None for v in params.values()):
        raise ValidationError(
            "requeue needs a filter (ids, message ids, channel, reason, time) or everything=True",
            field="filter",
        )
    with conn.cursor() as cur:
        cur.execute(query("dlq_requeue"), params | {"actor": actor})
        return cur.fetchone()[0]


def purge(conn: Any, *, before: datetime) -> int:
    """Delete dead deliveries that died before ``before`` (and their events); how many."""
    with conn.cursor() as cur:
        cur.execute(query("dlq_purge"), {"before": before})
        return cur.fetchone()[0]
