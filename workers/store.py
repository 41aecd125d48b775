"""The worker's database calls. The only module of the worker that names queries.

Queries live in sql/queries/worker.sql (claim, start, record, recovery,
heartbeat, release), sql/queries/gate.sql (rate-limit tokens) and sql/queries/breaker.sql
(circuit breakers). Every call here is one statement, so one round trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow, RowMaker, class_row, dict_row

from outbox.sql import query
from outbox.templates import TemplateVersion
from outbox.workers.decide import Decision
from outbox.workers.delivery import COLUMNS, ClaimedDelivery, TemplateVersions

#: The channel outbox.cancel notifies (the payload: a notification id) when it asks
#: deliveries in flight to stop (sql/functions/registry.sql, cancel_detailed).
CANCEL_CHANNEL = "outbox_cancel"

#: Every worker connection: autocommit, rows as dicts unless a call asks for a type.
Conn: TypeAlias = psycopg.AsyncConnection[DictRow]


async def connect(url: str, application_name: str, *, prepared: bool = False) -> Conn:
    """An autocommit connection: each worker statement is its own transaction.

    ``application_name`` shows in pg_stat_activity, so a DBA sees which worker
    (and which of its loops) holds a connection. The session's planner is told
    that the pages the worker reads are cached (sql/queries/worker.sql, session).
    ``prepared``: each statement is prepared at its first execution, and planned
    once for any values (the claim's, start marks' and record's connections: their
    statements run for every batch, and are written for that plan).
    """
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, application_name=application_name[:63]
    )
    await conn.execute(query("session"), {"generic": prepared})
    if prepared:
        conn.prepare_threshold = 0
    return conn


async def plan_ahead(conn: Conn, *, role: str, worker: str) -> None:
    """Run ``role``'s batch statement (claim, start or record) with nothing to do, so that
    it is parsed, prepared and planned before its first batch needs it (on a connection
    from ``connect(prepared=True)``). Claims, marks and records nothing."""
    if role == "claim":
        await claim(conn, worker=worker, channels=[], limit=0, lease_seconds=1.0)
    elif role == "start":
        await start(conn, worker=worker, starting=[])
    elif role == "record":
        await record(conn, worker=worker, results=[])
    else:
        raise ValueError(f"no batch statement for the role {role!r}: claim, start or record")


# -- claim and record -------------------------------------------------------------------


def _claimed_rows(cursor: psycopg.AsyncCursor[Any]) -> RowMaker[tuple[Any, ...]]:
    """Rows of the claim query as tuples in ClaimedDelivery's order, names checked.

    The names are compared once per statement, not per row: positional
    construction is what keeps a typed row as cheap as a dict.
    """
    names = tuple(c.name for c in cursor.description or ())
    if names != COLUMNS:
        raise RuntimeError(
            f"the claim query's columns {list(names)} do not match ClaimedDelivery's "
            f"fields {list(COLUMNS)} (sql/queries/worker.sql, workers/delivery.py)"
        )
    return tuple


_TEMPLATE_ID = COLUMNS.index("template_id")
_CONTENT_HASH = COLUMNS.index("content_hash")


async def claim(
    conn: Conn,
    *,
    worker: str,
    channels: Sequence[str],
    limit: int,
    lease_seconds: float,
    templates: TemplateVersions | None = None,
) -> list[ClaimedDelivery]:
    """Claim up to ``limit`` due deliveries (expired ones included, marked so), each
    with its template version's contents.

    The claim returns a version's id and content hash only; the contents come from
    ``templates`` (the worker's, kept across claims), and those it lacks from one
    more statement. The claim is committed by then: if that statement fails, the
    rows are leased but held by no one, and lease recovery returns them to pending
    (no send began, so none counts as in doubt).
    """
    cur = conn.cursor(row_factory=_claimed_rows)
    await cur.execute(
        query("claim"),
        {
            "worker": worker,
            "channels": list(channels),
            "limit": limit,
            "lease_seconds": lease_seconds,
        },
    )
    rows = await cur.fetchall()
    known = templates if templates is not None else TemplateVersions()
    missing = known.missing((r[_TEMPLATE_ID], r[_CONTENT_HASH]) for r in rows)
    if missing:
        known.add(await claimed_templates(conn, missing))
    # The version is the field after the columns (delivery.COLUMNS).
    return [ClaimedDelivery(*(*r, known.get(r[_TEMPLATE_ID], r[_CONTENT_HASH]))) for r in rows]


async def claimed_templates(conn: Conn, ids: Sequence[int]) -> list[TemplateVersion]:
    """The template versions ``ids``, with their contents."""
    cur = conn.cursor(row_factory=class_row(TemplateVersion))
    await cur.execute(query("claimed_templates"), {"ids": list(ids)})
    return await cur.fetchall()


async def start(conn: Conn, *, worker: str, starting: Sequence[tuple[int, int]]) -> set[int]:
    """Write the 'processing' event of each (delivery id, attempt) whose provider call is
    about to begin; the ids this worker still holds at that attempt (those may start)."""
    ordered = sorted(starting)
    cur = await conn.execute(
        query("start"),
        {"worker": worker, "ids": [s[0] for s in ordered], "attempts": [s[1] for s in ordered]},
    )
    return {row["id"] for row in await cur.fetchall()}


async def record(
    conn: Conn,
    *,
    worker: str,
    results: Sequence[tuple[int, int, Decision, int | None]],
) -> dict[int, str]:
    """Record (delivery id, attempt, decision, template id) results; the ids recorded, each
    with the event recorded for it.

    That is the decision's kind, or ``cancelled`` for a delivery whose cancel was
    requested while it was in flight (the database decides, from the row it locks).
    The batch goes as one JSON parameter (see the ``record`` query): one value
    to adapt instead of twelve arrays, and no key for what is unset. Sorted by
    id, the order the plan visits (and locks) them in by primary key, and the
    order ``outbox.cancel_detailed`` locks a notification's rows in: the two do not
    deadlock over them.
    """
    ordered = sorted(results, key=lambda r: r[0])
    cur = await conn.execute(query("record"), {"worker": worker, "results": _results_json(ordered)})
    return {row["id"]: row["kind"] for row in await cur.fetchall()}


def _results_json(results: Sequence[tuple[int, int, Decision, int | None]]) -> str:
    items = []
    for delivery_id, attempt, d, template_id in results:
        item: dict[str, Any] = {
            "id": delivery_id,
            "attempt": attempt,
            "status": d.status,
            "kind": d.kind,
        }
        if d.delay is not None:
            item["delay"] = d.delay
        if d.provider is not None:
            item["provider"] = d.provider
        if d.provider_message_id is not None:
            item["provider_message_id"] = d.provider_message_id
        if d.error is not None:
            item["error"] = d.error
        if template_id is not None:
            item["template_id"] = template_id
        if d.in_doubt:
            item["in_doubt"] = int(d.in_doubt)
        if d.refund:
            item["refund"] = int(d.refund)
        if d.detail:
            item["detail"] = d.detail
        items.append(item)
    # default=str: an adapter's detail must never stop a result from being recorded.
    return json.dumps(items, default=str)


async def retire_destinations(
    conn: Conn,
    *,
    worker: str,
    tokens: Sequence[tuple[str, str]],
    addresses: Sequence[tuple[str, str, str]],
) -> None:
    """Deactivate dead push tokens (token, reason); suppress dead (channel, address, reason)."""
    async with conn.transaction():
        if tokens:
            await conn.execute(
                query("deactivate_devices"),
                {
                    "worker": worker,
                    "tokens": [t for t, _ in tokens],
                    "reasons": [r for _, r in tokens],
                },
            )
        if addresses:
            await conn.execute(
                query("suppress_destinations"),
                {
                    "channels": [a[0] for a in addresses],
                    "destinations": [a[1] for a in addresses],
                    "reasons": [a[2] for a in addresses],
                },
            )


# -- leases -----------------------------------------------------------------------------


async def recover_leases(conn: Conn, *, worker: str, limit: int = 1000) -> tuple[int, int, int]:
    """Return expired leases to pending (or dead, or cancelled); (recovered, dead, cancelled)."""
    cur = await conn.execute(query("recover_leases"), {"worker": worker, "limit": limit})
    row = await cur.fetchone()
    return (row["recovered"], row["dead"], row["cancelled"]) if row else (0, 0, 0)


async def heartbeat(conn: Conn, *, worker: str, ids: Sequence[int], lease_seconds: float) -> None:
    await conn.execute(
        query("heartbeat"), {"worker": worker, "ids": list(ids), "lease_seconds": lease_seconds}
    )


async def release(conn: Conn, *, worker: str, held: Sequence[tuple[int, int, bool]]) -> None:
    """Give back (delivery id, attempt, started) rows this worker will not finish."""
    await conn.execute(
        query("release"),
        {
            "worker": worker,
            "ids": [h[0] for h in held],
            "attempts": [h[1] for h in held],
            "started": [h[2] for h in held],
        },
    )


async def listen(conn: Conn) -> None:
    """LISTEN for new work (``outbox_work``) and for cancels of sends in flight
    (``outbox_cancel``)."""
    await conn.execute(query("wake_listen"))
    await conn.execute(query("cancel_listen"))


# -- rate limits (sql/admit.sql, sql/ratelimit.sql) -------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """A delivery the rate limits hold back: how long, and which limit held it."""

    id: int
    wait_seconds: float
    limited_by: str  # e.g. 'provider:twilio'


async def admit(
    conn: Conn,
    *,
    deliveries: Sequence[ClaimedDelivery],
    providers: Sequence[str | None],
    prune_limit: int,
) -> list[Verdict]:
    """Take rate-limit tokens for ``deliveries`` (sent through ``providers``), in order.

    Returns only the deliveries that may not go now. ``prune_limit`` > 0 also
    deletes that many full buckets.
    """
    cur = conn.cursor(row_factory=class_row(Verdict))
    await cur.execute(
        query("admit"),
        {
            "ids": [d.id for d in deliveries],
            "recipient_ids": [d.recipient_id for d in deliveries],
            "channels": [d.channel for d in deliveries],
            "destinations": [d.destination for d in deliveries],
            "providers": list(providers),
            "prune_limit": prune_limit,
        },
    )
    return await cur.fetchall()


# -- circuit breakers (sql/breaker.sql) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerRow:
    """One provider's breaker as ``breaker_record`` / ``breaker_refresh`` return it."""

    provider: str
    previous: str | None
    state: str
    failures: int
    trips: int
    reason: str | None
    probe_owner: str | None
    # Until retry_at (open) or until the probe claim expires (half_open), by the
    # database's clock; None when closed.
    retry_in_seconds: float | None
    # breaker_refresh only: this worker claimed the probe just now.
    claimed: bool = False


async def breaker_refresh(
    conn: Conn,
    *,
    worker: str,
    providers: Sequence[str],
    probe_seconds: float,
) -> list[BreakerRow]:
    """Every breaker row of ``providers``, claiming for ``worker`` the probes that are due."""
    cur = conn.cursor(row_factory=class_row(BreakerRow))
    await cur.execute(
        query("breaker_refresh"),
        {"worker": worker, "providers": list(providers), "probe_seconds": probe_seconds},
    )
    return await cur.fetchall()


async def breaker_record(
    conn: Conn,
    *,
    worker: str,
    providers: Sequence[str],
    successes: Sequence[int],
    failures: Sequence[int],
    configs: Sequence[int],
    reasons: Sequence[str | None],
    threshold: int,
    cooldown_seconds: float,
    cooldown_cap_seconds: float,
) -> list[BreakerRow]:
    """Apply one batch's per-provider tallies (parallel lists); the rows before and after."""
    cur = conn.cursor(row_factory=class_row(BreakerRow))
    await cur.execute(
        query("breaker_record"),
        {
            "worker": worker,
            "providers": list(providers),
            "successes": list(successes),
            "failures": list(failures),
            "configs": list(configs),
            "reasons": list(reasons),
            "threshold": threshold,
            "cooldown_seconds": cooldown_seconds,
            "cooldown_cap_seconds": cooldown_cap_seconds,
        },
    )
    return await cur.fetchall()
