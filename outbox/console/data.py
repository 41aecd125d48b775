"""What the console's pages show, read in one call per page (synchronous: a pooled connection).

Queue depth, the dead letters and a message's timeline are what ``outbox
status``, ``outbox dlq list`` and ``outbox inspect`` read (outbox.ops,
outbox.dlq); the rest is the console's own queries (sql/queries/console.sql).
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from outbox import ops
from outbox.sql import query

#: The window of the throughput chart and the providers' activity.
THROUGHPUT_MINUTES = 60
SEARCH_LIMIT = 50


def _rows(conn: Any, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params)
        return cur.fetchall()


def throughput(conn: Any, minutes: int = THROUGHPUT_MINUTES) -> dict[str, Any]:
    """Sent, delivered, retried and dead per minute over the last ``minutes``, with totals."""
    rows = _rows(conn, "console_throughput", {"minutes": minutes})
    kinds = ("sent", "delivered", "retried", "dead")
    return {
        "minutes": rows,
        "totals": {k: sum(r[k] for r in rows) for k in kinds},
        "last5": {k: sum(r[k] for r in rows[-5:]) for k in kinds},
        "peak": max((max(r["sent"], r["dead"]) for r in rows), default=0),
    }


def overview(conn: Any) -> dict[str, Any]:
    """The front page: ``outbox status`` (depth, oldest, dead, breakers) and the throughput."""
    return ops.status(conn) | {"throughput": throughput(conn)}


def providers(conn: Any) -> dict[str, Any]:
    """Breakers (None without their table), rate limits and each provider's recent outcomes."""
    status = ops.status(conn)
    return {
        "breakers": status["breakers"],
        "limits": _rows(conn, "console_rate_limits", {}),
        "activity": _rows(conn, "console_provider_activity", {"minutes": THROUGHPUT_MINUTES}),
        "minutes": THROUGHPUT_MINUTES,
    }


def search(conn: Any, q: str, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
    """Notifications whose message id, recipient, address or destination is exactly ``q``."""
    return _rows(conn, "console_search", {"q": q, "limit": limit})
