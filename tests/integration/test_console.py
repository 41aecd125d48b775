"""The operator console over HTTP against a real PostgreSQL: login, CSRF, confirmation, escaping.

The browser test (tests/browser/test_console.py) drives the same pages in Chromium.
"""

from __future__ import annotations

import httpx
import pytest
from markupsafe import escape
from structlog.testing import capture_logs

from tests.integration.console_helpers import (
    OPERATOR,
    TOKEN,
    XSS_ADDRESS,
    XSS_MESSAGE_ID,
    XSS_REASON,
    dead_letters,
    events,
    hidden,
    serving,
    status,
)
from tests.integration.console_helpers import login as login_form


@pytest.fixture
def dead(conn, db_url):
    return dead_letters(conn, db_url)


@pytest.fixture
def console(db_url):
    with serving(db_url) as thread:
        yield thread


@pytest.fixture
def client(console):
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=10) as c:
        yield c


@pytest.fixture
def operator(client):
    assert login_form(client).status_code == 303
    return client


def test_every_page_needs_a_login_and_an_action_without_one_changes_nothing(client, conn, dead):
    for path in ("/", "/dead", "/providers", "/search?q=order-1", "/message?id=order-1"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    delivery = dead["order-1"]
    refused = client.post("/dead/requeue", data={"id": str(delivery), "confirm": "yes"})
    assert refused.status_code == 401
    assert status(conn, delivery) == "dead" and events(conn, delivery, "requeued") == []


def test_login_takes_the_token_and_never_logs_it(client):
    with capture_logs() as logs:
        wrong = login_form(client, token="not-the-token")
        assert wrong.status_code == 401 and "Wrong console token." in wrong.text
        assert client.get("/").status_code == 303  # still logged out
        right = login_form(client)
        assert right.status_code == 303 and right.headers["location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert f'<span class="operator" id="operator">{OPERATOR}</span>' in page.text
    names = [e["event"] for e in logs]
    assert "console.login_refused" in names and "console.login" in names
    assert not any("not-the-token" in repr(e) or TOKEN in repr(e) for e in logs)
    assert TOKEN not in page.text


def test_after_ten_wrong_tokens_an_address_waits_even_with_the_right_one(client):
    for _ in range(10):
        assert login_form(client, token="guess-guess-guess").status_code == 401
    with capture_logs() as logs:
        held = login_form(client)  # the right token, but too soon
    assert held.status_code == 429
    assert 0 < int(held.headers["retry-after"]) <= 300
    assert "Too many wrong tokens from this address" in held.text
    assert [e["reason"] for e in logs if e["event"] == "console.login_refused"] == [
        "too many wrong tokens"
    ]
    assert client.get("/").status_code == 303  # still logged out


def test_a_login_form_from_elsewhere_and_a_bad_operator_name_are_refused(client):
    # No nonce cookie/field pair: a form posted from another site.
    forged = client.post("/login", data={"operator": "mallory", "token": TOKEN, "nonce": "x"})
    assert forged.status_code == 403
    page = client.get("/login")
    bad = client.post(
        "/login",
        data={"operator": "a b", "token": TOKEN, "nonce": hidden(page.text, "nonce")},
    )
    assert bad.status_code == 400 and "operator:" in bad.text
    assert client.get("/").status_code == 303


def test_a_forged_or_foreign_session_cookie_is_a_logged_out_request(db_url, operator):
    cookie = operator.cookies["outbox_console"]
    payload, signature = cookie.split(".")
    for value in (f"{payload}.{signature[:-2]}xx", "garbage", f"{payload}x.{signature}"):
        with httpx.Client(base_url=str(operator.base_url), cookies={"outbox_console": value}) as c:
            assert c.get("/").status_code == 303, value
    # A console with another token does not accept this one's cookies.
    with (
        serving(db_url, token="another-token-entirely") as other,
        httpx.Client(base_url=other.url, cookies={"outbox_console": cookie}) as c,
    ):
        assert c.get("/").status_code == 303


def test_the_next_page_after_login_is_local_only(client):
    page = client.get("/login?next=//evil.example/x")
    response = client.post(
        "/login",
        data={
            "operator": OPERATOR,
            "token": TOKEN,
            "nonce": hidden(page.text, "nonce"),
            "next": "//evil.example/x",
        },
    )
    assert response.headers["location"] == "/"


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    operator, conn, dead
):
    delivery = dead["order-1"]
    for csrf in (None, "", "not-the-token"):
        data = {"id": str(delivery), "confirm": "yes"} | (
            {"csrf": csrf} if csrf is not None else {}
        )
        for action in ("requeue", "purge"):
            refused = operator.post(f"/dead/{action}", data=data)
            assert refused.status_code == 403, (action, csrf)
            assert "CSRF" in refused.text
    assert operator.post("/logout", data={"csrf": "nope"}).status_code == 403
    assert status(conn, delivery) == "dead"
    assert events(conn, delivery, "requeued") == [] and events(conn, delivery, "cancelled") == []


def test_requeue_asks_first_then_records_the_operator_and_address(operator, conn, dead):
    delivery = dead["order-1"]
    confirm = operator.get(f"/dead/confirm?action=requeue&id={delivery}")
    assert confirm.status_code == 200 and "Requeue 1 dead delivery?" in confirm.text
    assert status(conn, delivery) == "dead"  # looking at the confirmation changes nothing
    csrf = hidden(confirm.text, "csrf")
    unconfirmed = operator.post("/dead/requeue", data={"csrf": csrf, "id": str(delivery)})
    assert unconfirmed.status_code == 200 and 'id="confirm-form"' in unconfirmed.text
    assert status(conn, delivery) == "dead"
    done = operator.post(
        "/dead/requeue", data={"csrf": csrf, "id": str(delivery), "confirm": "yes"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/dead?done=requeue&n=1"
    assert "Requeued 1 dead delivery." in operator.get(done.headers["location"]).text
    assert status(conn, delivery) == "pending"
    [(worker, detail)] = events(conn, delivery, "requeued")
    assert worker == f"console:{OPERATOR}"
    assert detail == {
        "operator": OPERATOR,
        "via": "console",
        "from": "127.0.0.1",
        "previous_error": "sandbox-mail: 550 mailbox unavailable",
    }
    # The same ids again: nothing is dead any more, nothing changes, nothing is written.
    again = operator.post(
        "/dead/requeue", data={"csrf": csrf, "id": str(delivery), "confirm": "yes"}
    )
    assert again.headers["location"] == "/dead?done=requeue&n=0"
    assert len(events(conn, delivery, "requeued")) == 1


def test_purge_asks_first_then_deletes_and_leaves_an_event_naming_the_operator(
    operator, conn, dead
):
    delivery = dead["order-1"]
    csrf = hidden(operator.get("/dead").text, "csrf")
    asked = operator.post("/dead/purge", data={"csrf": csrf, "id": str(delivery)})
    assert asked.status_code == 200 and "Purge 1 dead delivery?" in asked.text
    assert "This cannot be undone." in asked.text
    assert status(conn, delivery) == "dead"
    done = operator.post("/dead/purge", data={"csrf": csrf, "id": str(delivery), "confirm": "yes"})
    assert done.headers["location"] == "/dead?done=purge&n=1"
    assert status(conn, delivery) is None
    [(worker, detail)] = events(conn, delivery, "cancelled")
    assert worker == f"console:{OPERATOR}"
    assert detail["purged"] is True and detail["operator"] == OPERATOR
    assert detail["from"] == "127.0.0.1" and detail["channel"] == "email"
    # Its other events went with it; the purge event is what the timeline shows.
    assert [kind for kind, in conn.execute(
        "SELECT kind FROM outbox.events WHERE delivery_id = %s", [delivery]
    )] == ["cancelled"]  # fmt: skip
    timeline = operator.get("/message?id=order-1").text
    assert "No delivery left" in timeline and f"console:{OPERATOR}" in timeline


def test_user_input_is_escaped_on_every_page(operator, dead):
    delivery = dead[XSS_MESSAGE_ID]
    pages = {
        "/dead": operator.get("/dead"),
        "/search": operator.get("/search", params={"q": XSS_MESSAGE_ID}),
        "/search by address": operator.get("/search", params={"q": XSS_ADDRESS}),
        "/message": operator.get("/message", params={"id": XSS_MESSAGE_ID}),
        "/dead/confirm": operator.get(f"/dead/confirm?action=purge&id={delivery}"),
    }
    for name, page in pages.items():
        assert page.status_code == 200, name
        for raw in ("<script>alert", "<svg/onload", "<img src=x"):
            assert raw not in page.text, (name, raw)
        assert "script-src 'nonce-" in page.headers["content-security-policy"]
    # Shown, escaped, where each belongs.
    assert str(escape(XSS_MESSAGE_ID)) in pages["/message"].text
    assert str(escape(XSS_ADDRESS)) in pages["/dead"].text
    assert str(escape(XSS_REASON)) in pages["/dead"].text
    assert str(escape(XSS_MESSAGE_ID)) in pages["/search"].text
    assert str(escape(XSS_MESSAGE_ID)) in pages["/search by address"].text
    # The search box echoes the term escaped too; an unknown one is a 404 page, escaped.
    missing = operator.get("/message", params={"id": "<b>nope</b>"})
    assert missing.status_code == 404 and "<b>nope</b>" not in missing.text


def test_dead_letters_filter_by_channel_provider_reason_and_age(operator, dead):
    def shown(**params) -> set[int]:
        page = operator.get("/dead", params=params)
        assert page.status_code == 200, page.text
        return {i for i in dead.values() if f'id="delivery-{i}"' in page.text}

    everything = set(dead.values())
    assert shown() == everything
    assert shown(channel="email") == everything and shown(channel="sms") == set()
    assert shown(provider="sandbox-mail") == everything and shown(provider="twilio") == set()
    assert shown(reason="550") == {dead["order-1"]}
    assert shown(since="1h") == everything and shown(older_than="1h") == set()
    bad = operator.get("/dead", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since:" in bad.text
    assert operator.get("/dead", params={"channel": "fax"}).status_code == 400


def test_the_overview_shows_depth_oldest_dead_and_throughput(operator, dead):
    page = operator.get("/")
    assert page.status_code == 200
    text = page.text
    assert 'id="queue-depth"' in text and "<td>sms</td>" in text
    assert '<span class="status pending">pending</span>' in text
    assert 'id="oldest"' in text and 'id="dead-summary"' in text
    assert "dead <b>2</b>" in text  # the two deaths are in the last hour's throughput
    assert "nonce-" in page.headers["content-security-policy"]
    assert "location.reload()" in text  # the refresh script; the data is there without it


def test_the_providers_page_shows_breakers_and_rate_limits(operator, conn, dead):
    conn.execute(
        "INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst, description)"
        " VALUES ('provider', 'twilio', 10, 20, '<i>contract</i>')"
    )
    conn.execute(
        "INSERT INTO outbox.provider_breakers (provider, state, failures, trips, opened_at,"
        " retry_at, reason) VALUES ('twilio', 'open', 10, 1, now(), now() + interval '30s',"
        " '503 from twilio')"
    )
    conn.commit()
    page = operator.get("/providers")
    assert page.status_code == 200
    assert '<span class="breaker open">open</span>' in page.text and "503 from twilio" in page.text
    assert "&lt;i&gt;contract&lt;/i&gt;" in page.text and ">20.0<" in page.text  # a full bucket
    assert "sandbox-mail" in page.text  # the deaths of the last hour, by provider


def test_a_form_too_large_or_not_a_form_is_a_clear_400(operator, dead):
    csrf = hidden(operator.get("/dead").text, "csrf")
    big = operator.post("/dead/requeue", data={"csrf": csrf, "id": "1" * 70_000})
    assert big.status_code == 400 and "larger than" in big.text
    as_json = operator.post("/dead/requeue", json={"csrf": csrf, "id": [1]})
    assert as_json.status_code == 400 and "expected a form" in as_json.text
    bad_id = operator.post("/dead/requeue", data={"csrf": csrf, "id": "one"})
    assert bad_id.status_code == 400 and "id:" in bad_id.text


def test_logout_ends_the_session(operator):
    csrf = hidden(operator.get("/").text, "csrf")
    assert operator.post("/logout", data={"csrf": csrf}).headers["location"] == "/login"
    assert operator.get("/").status_code == 303


def test_under_the_worker_role_it_requeues_and_under_the_reader_role_it_only_looks(
    conn,
    dead,
    login,  # noqa: F811 - test_ops' fixture: a login role in a group
):
    delivery = dead["order-1"]
    for group, allowed in (("outbox_reader", False), ("outbox_worker", True)):
        with (
            serving(login(group)) as console,
            httpx.Client(base_url=console.url, timeout=10) as client,
        ):
            assert login_form(client).status_code == 303
            for page in ("/", "/dead", "/providers", "/search?q=order-1", "/message?id=order-1"):
                assert client.get(page).status_code == 200, (group, page)
            csrf = hidden(client.get("/dead").text, "csrf")
            done = client.post(
                "/dead/requeue", data={"csrf": csrf, "id": str(delivery), "confirm": "yes"}
            )
            if allowed:
                assert done.status_code == 303 and status(conn, delivery) == "pending"
            else:
                assert done.status_code == 403 and "outbox_worker" in done.text
                assert status(conn, delivery) == "dead"


def test_a_short_console_token_is_refused_at_start_without_echoing_it(db_url):
    from typer.testing import CliRunner

    from outbox.cli import _register, app

    if not any(c.name == "status" for c in app.registered_commands):
        _register()
    result = CliRunner().invoke(
        app,
        ["console", "--port", "0"],
        env={"OUTBOX_DATABASE_URL": db_url, "OUTBOX_CONSOLE_TOKEN": "hunter2", "COLUMNS": "200"},
    )
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())
    assert "OUTBOX_CONSOLE_TOKEN" in said and "at least 16 characters (got 7)" in said
    assert "hunter2" not in result.output
