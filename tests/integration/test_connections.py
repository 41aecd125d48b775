"""The worker's connections by role: reconnect with backoff, and what an outage logs."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import psycopg
import structlog
from psycopg.conninfo import make_conninfo

from outbox.workers.connections import BATCH_ROLES, Connections, describe_server
from tests import factories


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


async def _session(conn: psycopg.AsyncConnection) -> tuple[int | None, str, list[tuple[str, int]]]:
    """The connection's prepare threshold, plan_cache_mode and prepared statements
    (text, generic plans made)."""
    cur = await conn.execute("SHOW plan_cache_mode")
    mode = (await cur.fetchone())["plan_cache_mode"]
    cur = await conn.execute(
        "SELECT statement, generic_plans FROM pg_prepared_statements ORDER BY statement"
    )
    prepared = [(r["statement"], r["generic_plans"]) for r in await cur.fetchall()]
    return conn.prepare_threshold, mode, prepared


def test_the_batch_roles_open_prepared_and_planned_and_change_nothing(conn, db_url):
    """The claim's, start marks' and record's connections prepare each statement at its
    first execution, planned for any values, and run their batch statement once with
    nothing to do as they open: a worker's first wake-ups no longer plan the claim anew
    each time. Opening claims, marks and records nothing."""
    factories.seven(conn, fcm=False)
    factories.enqueue_committed(conn, "m-1", channels=["email"])
    before = conn.execute(
        "SELECT status::text, attempts, lease_owner FROM outbox.deliveries"
    ).fetchall()
    events = conn.execute("SELECT count(*) FROM outbox.events").fetchone()

    async def go() -> dict[str, tuple[int | None, str, list[tuple[str, int]]]]:
        connections = Connections(db_url, "w-open", Counter(), structlog.get_logger())
        try:
            # The start-up's warm-up and a first send asking at once share one connection.
            _, start = await asyncio.gather(
                connections.open("start", "record"), connections.get("start")
            )
            assert connections.current("start") is start
            seen = {}
            for role in (*BATCH_ROLES, "house"):
                seen[role] = await _session(await connections.get(role))
            return seen
        finally:
            await connections.close_all()

    seen = asyncio.run(go())
    for role in BATCH_ROLES:
        threshold, mode, prepared = seen[role]
        assert (threshold, mode) == (0, "force_generic_plan"), role
        # Its batch statement is prepared, and was planned generically already.
        assert [n for text, n in prepared if "outbox.deliveries" in text] == [1], role
    assert seen["house"] == (5, "auto", [])
    assert (
        conn.execute("SELECT status::text, attempts, lease_owner FROM outbox.deliveries").fetchall()
        == before
        == [("pending", 0, None)]
    )
    assert conn.execute("SELECT count(*) FROM outbox.events").fetchone() == events
    opened = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        ["outbox-worker % w-open"],
    ).fetchall()
    assert opened == []  # all closed again


def test_a_plan_cache_mode_a_dba_set_is_kept(db_url):
    custom = make_conninfo(db_url, options="-c plan_cache_mode=force_custom_plan")

    async def go() -> str:
        connections = Connections(custom, "w-dba", Counter(), structlog.get_logger())
        try:
            cur = await (await connections.get("claim")).execute("SHOW plan_cache_mode")
            return str((await cur.fetchone())["plan_cache_mode"])
        finally:
            await connections.close_all()

    assert asyncio.run(go()) == "force_custom_plan"
