"""The claim's typed rows: workers/store.py against the claim query, on a real database."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

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
