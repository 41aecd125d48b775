"""The dead-letter queue: a status, not another system. List, requeue, purge.

Each function runs in the caller's transaction (the CLI and the console commit).
Requeue and purge write one event per delivery they touch, naming the actor
(``cli:<user>``, ``console:<operator>``); ``detail`` adds what the caller knows
of that actor (the console: the operator and the address the request came from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from outbox.errors import ValidationError
from outbox.sql import query


def _filters(
    delivery_ids: Sequence[int] | None,
    message_ids: Sequence[str] | None,
    channel: str | None,
    provider: str | None,
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
        "provider": provider,
        "reason": reason,
        "since": since,
        "before": before,
    }


def _filtered(what: str, params: dict[str, Any], everything: bool) -> None:
    """Refuse an unfiltered requeue or purge: a slip must not touch the whole DLQ."""
    if not everything and all(v is None for v in params.values()):
        raise ValidationError(
            f"{what} needs a filter (ids, message ids, channel, provider, reason, time) "
            "or everything=True",
            field="filter",
        )


def list_dead(
    conn: Any,
    *,
    delivery_ids: Sequence[int] | None = None,
    message_ids: Sequence[str] | None = None,
    channel: str | None = None,
    provider: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Dead deliveries matching every given filter, newest first."""
    params = _filters(delivery_ids, message_ids, channel, provider, reason, since, before)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("dlq_list"), params | {"limit": limit})
        return cur.fetchall()


def requeue(
    conn: Any,
    *,
    actor: str,
    detail: Mapping[str, Any] | None = None,
    delivery_ids: Sequence[int] | None = None,
    message_ids: Sequence[str] | None = None,
    channel: str | None = None,
    provider: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    before: datetime | None = None,
    everything: bool = False,
) -> int:
    """Return matching dead deliveries to pending with attempts reset; how many.

    At least one filter is required unless ``everything`` is set, so that a
    slip of the keyboard cannot resend the whole DLQ. Each one gets a
    ``requeued`` event by ``actor``, its detail the previous error plus ``detail``.
    """
    params = _filters(delivery_ids, message_ids, channel, provider, reason, since, before)
    _filtered("requeue", params, everything)
    with conn.cursor() as cur:
        cur.execute(query("dlq_requeue"), params | _who(actor, detail))
        return cur.fetchone()[0]


def purge(
    conn: Any,
    *,
    actor: str,
    detail: Mapping[str, Any] | None = None,
    before: datetime | None = None,
    delivery_ids: Sequence[int] | None = None,
    message_ids: Sequence[str] | None = None,
    channel: str | None = None,
    provider: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    everything: bool = False,
) -> int:
    """Delete matching dead deliveries (``before``: died before it) and their events; how many.

    Needs a filter unless ``everything`` is set, like :func:`requeue`. Each
    purged delivery leaves one event on its notification (kind ``cancelled``,
    ``detail.purged`` true) by ``actor``, with its previous error plus ``detail``.
    """
    params = _filters(delivery_ids, message_ids, channel, provider, reason, since, before)
    _filtered("purge", params, everything)
    if everything and before is None:
        # outbox.purge_dead wants a filter too: "everything" is "died before the end of time".
        params["before"] = "infinity"
    with conn.cursor() as cur:
        cur.execute(query("dlq_purge"), params | _who(actor, detail))
        return cur.fetchone()[0]


def _who(actor: str, detail: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"actor": actor, "detail": Jsonb(dict(detail)) if detail else None}
