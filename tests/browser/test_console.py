"""The operator console in a real browser: log in, read the queue, requeue a dead delivery.

Set OUTBOX_CONSOLE_SCREENSHOTS=docs/console to (re)take the screenshots of docs/console.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.console_helpers import (
    OPERATOR,
    TOKEN,
    XSS_MESSAGE_ID,
    dead_letters,
    events,
    serving,
    status,
)

pytestmark = pytest.mark.slow
By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium is not installed").By


def _shoot(browser, name: str) -> None:
    folder = os.environ.get("OUTBOX_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_an_operator_logs_in_sees_the_queue_and_requeues_a_dead_delivery(browser, conn, db_url):
    # A provider limit (its bucket drained a little by the sends) and an open breaker,
    # for the providers page.
    conn.execute(
        "INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst, description)"
        " VALUES ('provider', 'sandbox-mail', 0.01, 50, 'sandbox tier: 50 at once')"
    )
    conn.execute(
        "INSERT INTO outbox.provider_breakers (provider, state, failures, trips, opened_at,"
        " retry_at, reason) VALUES ('twilio', 'open', 10, 1, now(), now() + interval '30s',"
        " 'twilio: 503 service unavailable')"
    )
    conn.commit()
    dead = dead_letters(conn, db_url, sent=12)
    delivery = dead["order-1"]
    with serving(db_url) as console:
        browser.get(console.url + "/")
        # Not logged in: the login page, which returns to the page asked for.
        assert browser.find_element(By.TAG_NAME, "h1").text == "Log in"
        browser.find_element(By.ID, "operator-name").send_keys(OPERATOR)
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        _shoot(browser, "login")
        browser.find_element(By.ID, "login").click()

        # The queue: the pending SMS by channel and status, the dead ones counted.
        depth = browser.find_element(By.ID, "queue-depth")
        assert "sms pending 1 0 1" in depth.text
        assert browser.find_element(By.ID, "operator").text == OPERATOR
        assert "email 2" in browser.find_element(By.ID, "dead-summary").text
        assert "sent 12" in browser.find_element(By.ID, "throughput-totals").text
        assert "dead 2" in browser.find_element(By.ID, "throughput-totals").text
        _shoot(browser, "queue")

        browser.find_element(By.LINK_TEXT, "Dead letters").click()
        row = browser.find_element(By.ID, f"delivery-{delivery}")
        assert "550 mailbox unavailable" in row.text
        # The XSS-looking message id is shown as text, and no script ran (no alert open).
        xss_row = browser.find_element(By.ID, f"delivery-{dead[XSS_MESSAGE_ID]}")
        assert XSS_MESSAGE_ID in xss_row.text
        _shoot(browser, "dead-letters")

        row.find_element(By.CLASS_NAME, "requeue").click()
        # The confirmation: what will change, nothing changed yet.
        assert browser.find_element(By.TAG_NAME, "h1").text == "Requeue 1 dead delivery?"
        assert "order-1" in browser.find_element(By.ID, "confirm-rows").text
        assert status(conn, delivery) == "dead"
        _shoot(browser, "confirm-requeue")
        browser.find_element(By.ID, "confirm").click()

        assert browser.find_element(By.ID, "notice").text == "Requeued 1 dead delivery."
        assert browser.find_elements(By.ID, f"delivery-{delivery}") == []  # no longer dead
        assert browser.find_elements(By.ID, f"delivery-{dead[XSS_MESSAGE_ID]}") != []
        assert status(conn, delivery) == "pending"
        [(worker, detail)] = events(conn, delivery, "requeued")
        assert worker == f"console:{OPERATOR}"
        assert detail["operator"] == OPERATOR and detail["from"] == "127.0.0.1"

        # The message's timeline shows the requeue and who did it.
        browser.get(console.url + "/message?id=order-1")
        timeline = browser.find_element(By.ID, "timeline").text
        assert "requeued" in timeline and f"console:{OPERATOR}" in timeline
        assert "pending" in browser.find_element(By.ID, f"delivery-{delivery}").text
        _shoot(browser, "message")

        browser.find_element(By.LINK_TEXT, "Providers").click()
        assert "sandbox-mail 12 0 2" in browser.find_element(By.ID, "activity").text
        assert "twilio open" in browser.find_element(By.ID, "breakers").text
        assert "sandbox-mail" in browser.find_element(By.ID, "rate-limits").text
        _shoot(browser, "providers")
