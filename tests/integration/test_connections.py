"""The worker's connections by role: reconnect with backoff, and what an outage logs."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import structlog

from outbox.workers.connections import Connections, describe_server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def test_the_first_failure_of_an_outage_says_why_and_where_never_the_password():
    port = _closed_port()
    url = f"postgresql://outbox:hunter2-secret@127.0.0.1:{port}/orders?connect_timeout=2"

    async def go() -> Counter[str]:
        stats: Counter[str] = Counter()
        connections = Connections(url, "w-down", stats, structlog.get_logger())
        attempt = asyncio.create_task(connections.get("claim"))
        await asyncio.sleep(0.4)  # a few retries: 0.05, 0.1, 0.2 s apart
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        return stats

    with structlog.testing.capture_logs() as logs:
        stats = asyncio.run(go())
    lines = [e for e in logs if e["event"] == "db.unavailable"]
    assert len(lines) >= 3 and stats["db_connect_failures"] == len(lines)
    first, later = lines[0], lines[1:]
    assert (first["host"], first["port"], first["database"]) == ("127.0.0.1", str(port), "orders")
    assert first["error"] == "OperationalError"
    assert "refused" in first["detail"].lower(), first["detail"]
    # Later retries of the same outage stay terse.
    assert all("detail" not in e and "host" not in e for e in later)
    assert "hunter2" not in repr(logs)


def test_an_outage_ends_with_the_first_connection_that_works(db_url):
    port = _closed_port()

    async def go() -> None:
        connections = Connections(
            f"postgresql://127.0.0.1:{port}/x", "w", Counter(), structlog.get_logger()
        )
        attempt = asyncio.create_task(connections.get("claim"))
        await asyncio.sleep(0.1)
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        connections.url = db_url  # the server is back
        conn = await connections.get("claim")
        assert connections.current("claim") is conn
        connections.url = f"postgresql://127.0.0.1:{port}/x"  # and gone again
        await connections.drop("claim", OSError("boom"))
        attempt = asyncio.create_task(connections.get("claim"))
        await asyncio.sleep(0.1)
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(go())
    detailed = [e for e in logs if e["event"] == "db.unavailable" and "detail" in e]
    assert len(detailed) == 2  # one per outage


def test_describe_server_reads_urls_and_conninfo_strings():
    assert describe_server("postgresql://u:pw@db.internal:6432/app") == {
        "host": "db.internal",
        "port": "6432",
        "database": "app",
    }
    assert describe_server("host=/run/postgresql dbname=app user=u password=pw") == {
        "host": "/run/postgresql",
        "port": "(default)",
        "database": "app",
    }
    assert describe_server("postgresql://")["host"] == "(default socket)"
    assert "pw" not in repr(describe_server("postgresql://u:pw@h/d"))
