"""The webhooks service's database calls: the only module here that names queries.

A batch of receipts is recorded, and its deliveries moved, in one transaction.
One receipt the database refuses must not cost the others: the provider would
retry the whole batch until it gave up. The provider modules pass on only
values the database takes (ids within bigint, addresses of bounded length,
text without NUL or lone surrogates), which is the cheap, common path: one
statement per batch. What gets past them anyway (a data, constraint or size
error) is caught here, and the batch is recorded again one receipt per
savepoint, so only the receipts the database refuses are set aside; each is
then recorded stripped to its identity, as ``refused``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from outbox.sql import query
from outbox.webhooks.base import Action, Receipt

log = structlog.get_logger("outbox.webhooks")

# What the database says about a value, not about itself: class 22 (out of range,
# bad encoding...), 23 (a constraint), 54 (an index row too large). Anything else
# (a connection lost, a bug in a query) fails the batch as before: the provider
# retries it, and recording receipts one by one would not help.
REFUSALS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)


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
    # The delivery the receipt names by our id is not its provider's, channel's,
    # notification's or address's: what disagreed (sql/queries/receipts.sql).
    mismatch: str | None = None
    # The database refused this receipt's values: the error's name. It is recorded
    # stripped to its identity, and it changed nothing.
    refused: str | None = None

    @property
    def waiting(self) -> bool:
        """A fresh terminal receipt whose delivery may yet become 'sent': retry it later.

        Its delivery is being sent or retried, or it is not found by the
        provider's message id because the worker has not stored that id yet.
        A receipt naming our delivery id that matches nothing never will.
        """
        if not self.fresh or self.moved or self.receipt.action is Action.NONE or self.refused:
            return False
        if self.delivery_id is None:
            return self.receipt.delivery_id is None and self.receipt.provider_message_id is not None
        return self.previous_status in ("pending", "processing")


@dataclass(frozen=True, slots=True)
class RoleCheck:
    """What the receiver's database role may do, against what receipts need."""

    role: str
    missing: list[str]  # needed to apply receipts, and not held: receipts would fail
    excess: list[str]  # held, and never needed: the login is broader than outbox_webhooks


def check_role(conn: psycopg.Connection[Any]) -> RoleCheck:
    """The privileges of ``conn``'s role that receipts need and lack, or hold beyond need.

    Called once at start-up (``outbox webhooks``), on a connection of its own,
    after the schema check: privileges are looked up by name, so the schema
    must be this release's.
    """
    rows = conn.execute(query("webhooks_role")).fetchall()
    conn.rollback()
    role = str(rows[0][0]) if rows else ""
    return RoleCheck(
        role=role,
        missing=[str(privilege) for _, privilege, needed, held in rows if needed and not held],
        excess=[str(privilege) for _, privilege, needed, held in rows if held and not needed],
    )


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
    # PostgreSQL text and jsonb cannot hold NUL, and UTF-8 has no lone surrogates
    # (JSON's "\ud800" gives one): either would fail the whole batch, and the
    # provider would retry it forever.
    if value is None:
        return None
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


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
    for the fresh terminal receipts that found their delivery. If the database
    refuses a value, again one receipt at a time (see the module's docstring).
    """
    unique = _dedupe(receipts)
    if not unique:
        return Recorded([], 0, 0)
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            return await _record(cur, unique)
    except REFUSALS as exc:
        log.warning(
            "webhooks.batch_refused",
            provider=unique[0].provider,
            receipts=len(unique),
            error=type(exc).__name__,
            sqlstate=exc.sqlstate,
        )
    outcomes: list[Outcome] = []
    suppressions = opt_outs = 0
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        for receipt in unique:
            try:
                async with conn.transaction():
                    one = await _record(cur, [receipt])
            except REFUSALS as exc:
                outcomes.append(await _refused(conn, cur, receipt, exc))
                continue
            outcomes += one.outcomes
            suppressions += one.suppressions
            opt_outs += one.opt_outs
    return Recorded(outcomes, suppressions, opt_outs)


async def _refused(
    conn: psycopg.AsyncConnection[Any],
    cur: psycopg.AsyncCursor[Any],
    receipt: Receipt,
    exc: psycopg.Error,
) -> Outcome:
    """Record a receipt the database refused as its identity only; its Outcome says why."""
    error = type(exc).__name__
    log.warning(
        "webhooks.receipt_refused",
        provider=receipt.provider,
        event_id=receipt.event_id,
        error=error,
        sqlstate=exc.sqlstate,
    )
    bare = Receipt(receipt.provider, receipt.event_id, receipt.status, detail={"refused": error})
    fresh = False
    try:
        async with conn.transaction():
            fresh = (await _record(cur, [bare])).outcomes[0].fresh
    except REFUSALS:
        pass  # even its identity is refused: the log line above is all there is
    return Outcome(receipt, fresh, False, None, None, None, None, refused=error)


async def _record(cur: psycopg.AsyncCursor[Any], unique: Sequence[Receipt]) -> Recorded:
    params = {
        **_common(unique),
        "suppress": [r.suppress for r in unique],
        "opt_outs": [r.opt_out for r in unique],
        "notification_ids": [r.notification_id for r in unique],
        "addresses": [_clean(r.address) for r in unique],
        "details": [_detail(r.detail) for r in unique],
    }
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
            mismatch=row["mismatch"],
        )
        for r, row in zip(unique, rows, strict=True)
    ]
    terminal = [
        outcomes[i]
        for i, o in enumerate(outcomes)
        if o.fresh and o.delivery_id is not None and o.receipt.action is not Action.NONE
    ]
    if terminal:
        applied = await _apply(
            cur, [o.receipt for o in terminal], [o.delivery_id for o in terminal], late=False
        )
        moved = {
            o.receipt.event_id for o, row in zip(terminal, applied, strict=True) if row["moved"]
        }
        outcomes = [replace(o, moved=o.receipt.event_id in moved) for o in outcomes]
    first = rows[0]
    return Recorded(outcomes, int(first["suppressions"]), int(first["opt_outs"]))


async def _apply(
    cur: psycopg.AsyncCursor[Any],
    receipts: Sequence[Receipt],
    matched: Sequence[int | None],
    *,
    late: bool,
) -> list[dict[str, Any]]:
    """``receipts_apply``: one row per receipt, in input order (moved, delivery_id, ...).

    ``matched``: the delivery receipts_record matched each receipt to (None: not
    yet, by the provider's message id), in place of the id the receipt named.
    """
    params = {
        **_common(receipts),
        "delivery_ids": list(matched),
        "named": [r.delivery_id is not None for r in receipts],
        "late": late,
    }
    await cur.execute(query("receipts_apply"), params)
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
        # LateReceipts holds each receipt with the delivery it was matched to, if any.
        rows = await _apply(cur, receipts, [r.delivery_id for r in receipts], late=True)
    return [_late_outcome(r, row) for r, row in zip(receipts, rows, strict=True)]


def _late_outcome(receipt: Receipt, row: dict[str, Any]) -> Outcome:
    delivery_id, previous = row["delivery_id"], row["previous_status"]
    if delivery_id is None and row["held_status"] in ("pending", "processing"):
        # Its delivery is in flight on a first attempt: no provider to check it
        # against yet (receipts_apply). Still waiting, not unmatched.
        delivery_id, previous = receipt.delivery_id, row["held_status"]
    return Outcome(
        receipt=receipt,
        fresh=True,
        moved=row["moved"],
        delivery_id=delivery_id,
        message_id=row["message_id"],
        attempt=row["attempt"],
        previous_status=previous,
    )
