"""The webhooks service's database calls: the only module here that names queries.

A batch of receipts is recorded, and its deliveries moved, in one transaction:
all together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from outbox.sql import query
from outbox.webhooks.base import Action, Receipt


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recording one receipt did."""

    receipt: Receipt
    fresh: bool  # first time seen (False: a repeat, nothing changed)
    moved: bool  # its delivery moved forward
    delivery_id: int | None
    message_id: str | None
    attempt: int | None
    previous_status: str | None  # the delivery's status when the receipt arrived

    @property
    def waiting(self) -> bool:
        """A fresh terminal receipt whose delivery may yet become 'sent': retry it later.

        Its delivery is being sent or retried, or it is not found by the
        provider's message id because the worker has not stored that id yet.
        A receipt naming our delivery id that matches nothing never will.
        """
        if not self.fresh or self.moved or self.receipt.action is Action.NONE:
            return False
        if self.delivery_id is None:
            return self.receipt.delivery_id is None and self.receipt.provider_message_id is not None
        return self.previous_status in ("pending", "processing")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a batch did."""

    outcomes: list[Outcome]
    suppressions: int  # addresses newly suppressed
    opt_outs: int  # recipients newly opted out


def _dedupe(receipts: Sequence[Receipt]) -> list[Receipt]:
    # A batch may repeat an event; the first copy stands for both.
    seen: set[tuple[str, str]] = set()
    unique = []
    for r in receipts:
        if (r.provider, r.event_id) not in seen:
            seen.add((r.provider, r.event_id))
            unique.append(r)
    return unique


def _clean(value: str | None) -> str | None:
    # PostgreSQL text and jsonb cannot hold NUL; a provider string with one
    # would fail the whole batch, and the provider would retry it forever.
    return value.replace("\x00", "") if value is not None else None


def _detail(detail: dict[str, Any]) -> str | None:
    if not detail:
        return None
    return json.dumps({k: _clean(v) if isinstance(v, str) else v for k, v in detail.items()})


def _common(receipts: Sequence[Receipt]) -> dict[str, list[Any]]:
    return {
        "providers": [r.provider for r in receipts],
        "channels": [r.channel for r in receipts],
        "event_ids": [_clean(r.event_id) for r in receipts],
        "statuses": [_clean(r.status) for r in receipts],
        "actions": [str(r.action) for r in receipts],
        "reasons": [_clean(r.reason) for r in receipts],
        "delivery_ids": [r.delivery_id for r in receipts],
        "provider_message_ids": [_clean(r.provider_message_id) for r in receipts],
        "occurred_at": [r.occurred_at for r in receipts],
    }


async def record(conn: psycopg.AsyncConnection[Any], receipts: Sequence[Receipt]) -> Recorded:
    """Record ``receipts`` (events, suppressions, opt-outs), then move their deliveries forward.

    Two statements in one transaction: ``receipts_record``, then ``receipts_apply``
    for the fresh terminal receipts that found their delivery.
    """
    unique = _dedupe(receipts)
    if not unique:
        return Recorded([], 0, 0)
    params = {
        **_common(unique),
        "suppress": [r.suppress for r in unique],
        "opt_outs": [r.opt_out for r in unique],
        "notification_ids": [r.notification_id for r in unique],
        "addresses": [_clean(r.address) for r in unique],
        "details": [_detail(r.detail) for r in unique],
    }
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("receipts_record"), params)
        rows = await cur.fetchall()
        outcomes = [
            Outcome(
                receipt=r,
                fresh=row["fresh"],
                moved=False,
                delivery_id=row["delivery_id"],
                message_id=row["message_id"],
                attempt=row["attempt"],
                previous_status=row["previous_status"],
            )
            for r, row in zip(unique, rows, strict=True)
        ]
        terminal = [
            i
            for i, o in enumerate(outcomes)
            if o.fresh and o.delivery_id is not None and o.receipt.action is not Action.NONE
        ]
        if terminal:
            applied = await _apply(cur, [outcomes[i].receipt for i in terminal], late=False)
            for i, row in zip(terminal, applied, strict=True):
                outcomes[i] = replace(outcomes[i], moved=row["moved"])
    first = rows[0]
    return Recorded(outcomes, int(first["suppressions"]), int(first["opt_outs"]))


async def _apply(
    cur: psycopg.AsyncCursor[Any], receipts: Sequence[Receipt], *, late: bool
) -> list[dict[str, Any]]:
    """``receipts_apply``: one row per receipt, in input order (moved, delivery_id, ...)."""
    await cur.execute(query("receipts_apply"), {**_common(receipts), "late": late})
    return await cur.fetchall()


async def apply_late(
    conn: psycopg.AsyncConnection[Any], receipts: Sequence[Receipt]
) -> list[Outcome]:
    """Try again to move the deliveries of receipts that arrived before their send was recorded.

    Every outcome is ``fresh`` (the receipt was recorded the first time); its
    ``waiting`` property says whether to keep trying.
    """
    if not receipts:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        rows = await _apply(cur, receipts, late=True)
    return [
        Outcome(
            receipt=r,
            fresh=True,
            moved=row["moved"],
            delivery_id=row["delivery_id"],
            message_id=row["message_id"],
            attempt=row["attempt"],
            previous_status=row["previous_status"],
        )
        for r, row in zip(receipts, rows, strict=True)
    ]
