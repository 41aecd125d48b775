"""The claim's typed rows: workers/store.py against the claim query, on a real database."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from outbox.sql import query
from outbox.templates import TemplateVersion
from outbox.workers import store
from outbox.workers.delivery import COLUMNS, ClaimedDelivery, TemplateVersions
from tests import factories


def test_a_claim_returns_typed_frozen_rows(conn, db_url):
    factories.seven(conn, fcm=False)
    factories.enqueue_committed(conn, "m-1", channels=["email"])

    async def go() -> list[ClaimedDelivery]:
        aconn = await store.connect(db_url, "test store")
        try:
            return await store.claim(
                aconn, worker="w", channels=["email"], limit=5, lease_seconds=30
            )
        finally:
            await aconn.close()

    [row] = asyncio.run(go())
    assert isinstance(row, ClaimedDelivery)
    assert (row.message_id, row.channel, row.status, row.attempts) == (
        "m-1",
        "email",
        "processing",
        1,
    )
    assert row.destination == "seven@example.com" and row.data == {"order": 42}
    assert row.template_key == "order_confirmed" and row.template_id is not None
    assert row.timezone == "UTC" and row.critical is False and row.blocked is None
    with pytest.raises(AttributeError):
        row.attempts = 2  # type: ignore[misc]


def test_columns_that_do_not_match_the_fields_fail_at_once_naming_both(db_url):
    async def go() -> None:
        aconn = await store.connect(db_url, "test store")
        try:
            cur = aconn.cursor(row_factory=store._claimed_rows)
            await cur.execute("SELECT 1 AS id, 2 AS notification")
        finally:
            await aconn.close()

    with pytest.raises(RuntimeError, match=r"\['id', 'notification'\].*'notification_id'"):
        asyncio.run(go())


@pytest.mark.parametrize("rate_limits", [0, 2])
def test_a_claim_commits_without_a_flush_and_the_start_mark_with_one(conn, db_url, rate_limits):
    """The claim turns synchronous_commit off for its own transaction only; the start
    mark, whose commit must be on disk before a request leaves, keeps the server's
    setting (and its flush covers the claim's WAL before it). With or without rate
    limits configured: the setting must not hang on their rows."""
    factories.seven(conn, fcm=False)
    for name in ["email", "sms"][:rate_limits]:
        conn.execute(
            "INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst) "
            "VALUES ('recipient', %s, 100, 100)",
            [name],
        )
    factories.enqueue_committed(conn, "m-1", channels=["email"])

    async def go() -> tuple[str, str, str, set[int]]:
        aconn = await store.connect(db_url, "test store")
        try:
            await aconn.set_autocommit(False)
            # The claim's statement, inside a transaction so its setting can be read.
            [row] = await store.claim(
                aconn, worker="w", channels=["email"], limit=5, lease_seconds=30
            )
            in_claim = await (await aconn.execute("SHOW synchronous_commit")).fetchone()
            await aconn.commit()
            after = await (await aconn.execute("SHOW synchronous_commit")).fetchone()
            await aconn.rollback()
            started = await store.start(aconn, worker="w", starting=[(row.id, row.attempts)])
            in_start = await (await aconn.execute("SHOW synchronous_commit")).fetchone()
            await aconn.commit()
            return (
                in_claim["synchronous_commit"],
                after["synchronous_commit"],
                in_start["synchronous_commit"],
                started,
            )
        finally:
            await aconn.close()

    in_claim, after, in_start, started = asyncio.run(go())
    assert in_claim == "off"
    assert after == in_start == "on"
    assert len(started) == 1


def test_a_claim_fetches_a_template_versions_contents_once(conn, db_url, monkeypatch):
    """The claim returns a version's id and hash; its text is read once per version
    (and again only if the hash no longer matches, as in a recreated database)."""
    factories.seven(conn, fcm=False)
    for i in range(3):
        factories.enqueue_committed(conn, f"m-{i}", channels=["email"])
    fetches: list[list[int]] = []
    fetch = store.claimed_templates

    async def counted(aconn: store.Conn, ids: list[int]) -> list[TemplateVersion]:
        fetches.append(list(ids))
        return await fetch(aconn, ids)

    monkeypatch.setattr(store, "claimed_templates", counted)
    templates = TemplateVersions()

    async def claim_one() -> ClaimedDelivery:
        aconn = await store.connect(db_url, "test store")
        try:
            [row] = await store.claim(
                aconn,
                worker="w",
                channels=["email"],
                limit=1,
                lease_seconds=30,
                templates=templates,
            )
            return row
        finally:
            await aconn.close()

    first = asyncio.run(claim_one())
    assert first.template is not None and first.resolved_template().id == first.template_id
    assert (first.template.subject, first.template.content_hash) == (
        "Order {{ order }}",
        first.content_hash,
    )
    second = asyncio.run(claim_one())
    assert second.template is first.template
    assert fetches == [[first.template_id]]

    # Same id, other content (the database was recreated): read again.
    templates.add([replace(first.template, body="stale", content_hash="stale")])
    third = asyncio.run(claim_one())
    assert third.template is not None and third.template.body == first.template.body
    assert fetches == [[first.template_id], [first.template_id]]


def test_a_claim_returns_no_template_text():
    """Every row of a batch used to carry the version's subject, body and HTML."""
    assert not {"subject", "body", "html_body", "title"} & set(COLUMNS)


# A backlog in the size range where, at the default random_page_cost, the planner
# prices one sequential scan of deliveries below a hundred primary-key lookups.
_BACKLOG = """
WITH n AS (
    INSERT INTO outbox.notifications (message_id, address, template_key, channels)
    SELECT 'plan-' || i, 'user' || i || '@example.com', 'order_confirmed', '{email}'
    FROM generate_series(1, 10000) AS i
    RETURNING id, address
)
INSERT INTO outbox.deliveries (notification_id, channel, destination, max_attempts)
SELECT n.id, 'email', n.address, 5 FROM n
"""


def _scanned_whole(plan: dict) -> set[str]:
    """The tables a JSON plan reads with a sequential scan."""
    found = {plan["Relation Name"]} if plan.get("Node Type") == "Seq Scan" else set()
    for child in plan.get("Plans", ()):
        found |= _scanned_whole(child)
    return found


# The type of each parameter of the worker's statements, for PREPARE.
_TYPES = {
    "worker": "text",
    "channels": "outbox.channel[]",
    "limit": "integer",
    "lease_seconds": "float8",
    "ids": "bigint[]",
    "attempts": "integer[]",
    "results": "jsonb",
}


def _generic_plan(name: str, params: dict[str, object]) -> tuple[str, str]:
    """PREPARE and EXPLAIN EXECUTE of worker query ``name`` with ``params``: the plan
    a prepared statement settles on, planned without the values (psycopg's
    EXPLAIN of a query with parameters plans it with them, a custom plan)."""
    text, order = query(name), []
    for key in re.findall(r"%\((\w+)\)s", text):
        if key not in order:
            order.append(key)
    for n, key in enumerate(order, 1):
        text = text.replace(f"%({key})s", f"${n}")
    types = ", ".join(_TYPES[key] for key in order)
    args = sql.SQL(", ").join(sql.Literal(params[key]) for key in order)
    prepare = f"PREPARE plan_{name} ({types}) AS {text}"
    explain = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {} ({})").format(
        sql.Identifier(f"plan_{name}"), args
    )
    return prepare, explain.as_string()


def _worker_plans(url: str) -> dict[str, set[str]]:
    """Tables scanned whole by the generic plans (what a worker's prepared
    statements settle on) of a batch's claim, start mark and record."""

    async def go() -> dict[str, set[str]]:
        aconn = await store.connect(url, "test store")
        try:
            await aconn.execute("SET plan_cache_mode = force_generic_plan")
            claimed = await store.claim(
                aconn, worker="w", channels=["email"], limit=100, lease_seconds=30
            )
            ids, attempts = [d.id for d in claimed], [d.attempts for d in claimed]
            results = [
                {"id": d.id, "attempt": d.attempts, "status": "sent", "kind": "sent"}
                for d in claimed
            ]
            statements: dict[str, dict[str, object]] = {
                "claim": {"worker": "w", "channels": ["email"], "limit": 100, "lease_seconds": 30},
                "start": {"worker": "w", "ids": ids, "attempts": attempts},
                "record": {"worker": "w", "results": json.dumps(results)},
            }
            plans = {}
            for name, params in statements.items():
                prepare, explain = _generic_plan(name, params)
                await aconn.execute(prepare)
                cur = await aconn.execute(explain)
                [[explained]] = [tuple(r.values()) for r in await cur.fetchall()]
                plans[name] = _scanned_whole(explained[0]["Plan"])
            return plans
        finally:
            await aconn.close()

    return asyncio.run(go())


def test_a_batch_is_planned_by_primary_key_not_by_scanning_deliveries(conn, db_url):
    """At 10,000 deliveries the default random_page_cost made the start mark and the
    record scan all of them for each batch of 100: a drain at half speed. The worker's
    session says its pages are cached, and each statement then joins its batch by
    primary key. The claim's generic plan took its LIMIT for a tenth of the backlog
    and hash-joined that many rows against scans of deliveries and notifications,
    whatever the setting; its lookups are now one index probe per row."""
    factories.seven(conn, fcm=False)
    conn.execute(_BACKLOG)
    conn.commit()
    conn.execute("ANALYZE outbox.deliveries, outbox.notifications")
    conn.commit()

    plans = _worker_plans(db_url)

    whole = {name: scans & {"deliveries", "notifications"} for name, scans in plans.items()}
    assert whole == {"claim": set(), "start": set(), "record": set()}


def test_the_worker_session_lowers_random_page_cost_but_keeps_a_lower_one(db_url):
    async def cost(url: str) -> str:
        aconn = await store.connect(url, "test store")
        try:
            row = await (await aconn.execute("SHOW random_page_cost")).fetchone()
            assert row is not None
            return str(row["random_page_cost"])
        finally:
            await aconn.close()

    assert asyncio.run(cost(db_url)) == "1.1"
    lower = make_conninfo(db_url, options="-c random_page_cost=1.05")
    assert asyncio.run(cost(lower)) == "1.05"
