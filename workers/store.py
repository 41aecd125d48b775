"""The worker's database calls. The only module of the worker that names queries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from outbox.sql import query
from workers.decide import Decision


async def connect(url: str, application_name: str) -> psycopg.AsyncConnection:
    """An autocommit connection: each worker statement is its own transaction.

    ``application_name`` shows in pg_stat_activity, so a DBA sees which worker
    (and which of its loops) holds a connection.
    """
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, application_name=application_name[:63])


async def claim(
    conn: psycopg.AsyncConnection, *, worker: str, channels: Sequence[str], limit: int,
    lease_seconds: float,
) -> list[dict[str, Any]]:
    cur = await conn.execute(query("claim"), {
        "worker": worker, "channels": list(channels), "limit": limit, "lease_seconds": lease_seconds,
    })
    return await cur.fetchall()


async def record(
    conn: psycopg.AsyncConnection, *, worker: str,
    results: Sequence[tuple[int, int, Decision, int | None]],
) -> set[int]:
    """Record (delivery id, attempt, decision, template id) results; return the ids recorded.

    Dead destinations are deactivated/suppressed in the same transaction.
    """
    params = {
        "worker": worker,
        "ids": [r[0] for r in results],
        "attempts": [r[1] for r in results],
        "statuses": [r[2].status for r in results],
        "kinds": [r[2].kind for r in results],
        "delays": [r[2].delay for r in results],
        "providers": [r[2].provider for r in results],
        "provider_message_ids": [r[2].provider_message_id for r in results],
        "errors": [r[2].error for r in results],
        "template_ids": [r[3] for r in results],
        "in_doubt": [r[2].in_doubt for r in results],
        "refunds": [r[2].refund for r in results],
        # default=str: an adapter's detail must never stop a result from being recorded.
        "details": [json.dumps(r[2].detail, default=str) if r[2].detail else None for r in results],
    }
    async with conn.transaction():
        cur = await conn.execute(query("record"), params)
        recorded = {row["id"] for row in await cur.fetchall()}
    return recorded


async def retire_destinations(
    conn: psycopg.AsyncConnection, *, worker: str,
    tokens: Sequence[tuple[str, str]], addresses: Sequence[tuple[str, str, str]],
) -> None:
    """Deactivate dead push tokens (token, reason); suppress dead (channel, address, reason)."""
    async with conn.transaction():
        if tokens:
            await conn.execute(query("deactivate_devices"), {
                "worker": worker, "tokens": [t for t, _ in tokens], "reasons": [r for _, r in tokens]})
        if addresses:
            await conn.execute(query("suppress_destinations"), {
                "channels": [a[0] for a in addresses], "destinations": [a[1] for a in addresses],
                "reasons": [a[2] for a in addresses]})


async def recover_leases(conn: psycopg.AsyncConnection, *, worker: str, limit: int = 1000) -> tuple[int, int]:
    """Return expired leases to pending (or dead); (recovered, dead)."""
    cur = await conn.execute(query("recover_leases"), {"worker": worker, "limit": limit})
    row = await cur.fetchone()
    return (row["recovered"], row["dead"]) if row else (0, 0)


async def heartbeat(conn: psycopg.AsyncConnection, *, worker: str, ids: Sequence[int],
                    lease_seconds: float) -> None:
    await conn.execute(query("heartbeat"), {"worker": worker, "ids": list(ids),
                                            "lease_seconds": lease_seconds})


async def release(conn: psycopg.AsyncConnection, *, worker: str,
                  held: Sequence[tuple[int, int, bool]]) -> None:
    """Give back (delivery id, attempt, started) rows this worker will not finish."""
    await conn.execute(query("release"), {
        "worker": worker, "ids": [h[0] for h in held], "attempts": [h[1] for h in held],
        "started": [h[2] for h in held]})


async def listen(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(query("wake_listen"))
