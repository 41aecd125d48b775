"""The worker's database calls. The only module of the worker that names queries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from outbox.sql import query
from outbox.workers.decide import Decision


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

    The batch goes as one JSON parameter (see the ``record`` query): one value
    to adapt instead of twelve arrays, and no key for what is unset.
    """
    cur = await conn.execute(query("record"), {"worker": worker, "results": _results_json(results)})
    return {row["id"] for row in await cur.fetchall()}


def _results_json(results: Sequence[tuple[int, int, Decision, int | None]]) -> str:
    items = []
    for delivery_id, attempt, d, template_id in results:
        item: dict[str, Any] = {"id": delivery_id, "attempt": attempt, "status": d.status, "kind": d.kind}
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
