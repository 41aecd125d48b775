"""Helpers for the console tests (HTTP and browser): dead letters made by a real worker, a login."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from outbox.console import ConsoleConfig, ConsoleServer, ConsoleThread, create_app
from outbox.providers.base import Outcome
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker

TOKEN = "console-test-token-0123456789"
OPERATOR = "alice"
# User input that would run as script if a page printed it unescaped.
XSS_MESSAGE_ID = '<script>alert("mid")</script>&\'"'
XSS_ADDRESS = "<svg/onload=alert(1)>@example.com"
XSS_REASON = "<img src=x onerror=alert(2)> rejected"


def dead_letters(conn: Any, db_url: str, *, sent: int = 0) -> dict[str, int]:
    """Two dead email deliveries (one with an XSS-looking message id and address), ``sent``
    SMS sent before them, and one pending SMS; the dead ones' delivery ids by message id."""
    factories.seven(conn, fcm=False)
    for n in range(sent):
        factories.enqueue_committed(conn, f"welcome-{n}", channels=["sms"])
    factories.enqueue_committed(conn, "order-1", channels=["email"])
    factories.enqueue_committed(
        conn, XSS_MESSAGE_ID, recipient=None, address=XSS_ADDRESS, channels=["email"]
    )
    provider = ScriptedProvider(
        "sandbox-mail",
        script={
            "seven@example.com": [Outcome.permanent("550 mailbox unavailable")],
            XSS_ADDRESS: [Outcome.permanent(XSS_REASON)],
        },
    )
    worker = make_worker(db_url, provider)

    async def drain() -> None:
        try:
            while await worker.run_once():
                pass
        finally:
            await worker.close()

    asyncio.run(drain())
    factories.enqueue_committed(conn, "order-2", channels=["sms"])
    rows = conn.execute(
        """SELECT n.message_id, d.id FROM outbox.deliveries d
           JOIN outbox.notifications n ON n.id = d.notification_id WHERE d.status = 'dead'"""
    ).fetchall()
    conn.commit()
    assert len(rows) == 2, rows
    return dict(rows)


@contextmanager
def serving(db_url: str, token: str = TOKEN) -> Iterator[ConsoleThread]:
    """The console on a free loopback port, in a thread."""
    server = ConsoleServer("127.0.0.1", 0)
    with ConsoleThread(server, create_app(ConsoleConfig(token=token), db_url)) as thread:
        yield thread


def hidden(html: str, name: str) -> str:
    """The value of the first hidden field ``name`` in a page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name!r} in the page"
    return found.group(1)


def login(client: httpx.Client, operator: str = OPERATOR, token: str = TOKEN) -> httpx.Response:
    """Log ``client`` in through the login form (nonce cookie and field, as a browser does)."""
    page = client.get("/login")
    return client.post(
        "/login",
        data={"operator": operator, "token": token, "nonce": hidden(page.text, "nonce")},
    )


def events(conn: Any, delivery_id: int, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(worker, detail) of the events of ``kind`` for one delivery."""
    conn.commit()  # a fresh snapshot: the console wrote on its own connection
    return conn.execute(
        "SELECT worker, detail FROM outbox.events WHERE delivery_id = %s AND kind = %s ORDER BY id",
        [delivery_id, kind],
    ).fetchall()


def status(conn: Any, delivery_id: int) -> str | None:
    conn.commit()
    row = conn.execute(
        "SELECT status::text FROM outbox.deliveries WHERE id = %s", [delivery_id]
    ).fetchone()
    return row[0] if row else None
