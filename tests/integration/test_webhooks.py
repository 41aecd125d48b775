"""Delivery receipts: signed provider webhooks -> ``outbox webhooks`` -> PostgreSQL.

Every test runs the service for real (hypercorn on a free 127.0.0.1 port, in a
thread) against a fresh database of its own, and posts over HTTP what the
provider would: signed with helpers written from the providers' documentation
(the sandbox's ``twilio_signature`` and ``sendgrid_signature``, Mandrill's and
Vonage's below), verified by the service with the providers' SDKs where they
have one. Deliveries are made ``sent`` by the real worker with a scripted
provider named after the real one, so provider and provider message id are
stored exactly as the worker stores them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from structlog.testing import capture_logs

import outbox
from outbox import migrate
from outbox.providers.base import Outcome
from outbox.providers.registry import build_providers
from outbox.sandbox import Sandbox, make_apns_key
from outbox.sandbox.credentials import sendgrid_public_key
from outbox.sandbox.receipts import sendgrid_signature, twilio_signature
from outbox.settings import Settings
from outbox.webhooks import WebhookConfig, WebhookServer, WebhookThread, create_app, store
from outbox.webhooks.base import Action, Receipt
from outbox.webhooks.metrics import REASONS, REGISTRY
from outbox.webhooks.vonage import signature as vonage_signature
from outbox.workers.config import WorkerConfig
from outbox.workers.worker import Worker
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker

TWILIO_TOKEN = "tw" + secrets.token_hex(15)
MAILCHIMP_KEY = "md" + secrets.token_urlsafe(20)
VONAGE_SECRET = "vs" + secrets.token_urlsafe(20)
# A private key of the shape SendGrid signs with (P-256); the service gets the public half.
SENDGRID_KEY = make_apns_key()
SENDGRID_PUBLIC = sendgrid_public_key(SENDGRID_KEY)
SECRETS = (TWILIO_TOKEN, MAILCHIMP_KEY, VONAGE_SECRET)
MAX_BODY = 64 * 1024
ANN_EMAIL, ANN_PHONE = "ann@example.com", "+14155550101"


# --- the service, the world, and what providers would post ----------------------------------


@dataclass
class Hooks:
    """The running service and a way to post to it as each provider would."""

    url: str
    http: httpx.Client

    def endpoint(self, provider: str) -> str:
        return f"{self.url}/webhooks/{provider}"

    def twilio(
        self,
        params: dict[str, str],
        *,
        token: str = TWILIO_TOKEN,
        url: str | None = None,
        sign: bool = True,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Twilio-Signature"] = twilio_signature(
                token, url or self.endpoint("twilio"), params
            )
        return self.http.post(self.endpoint("twilio"), content=urlencode(params), headers=headers)

    def sendgrid(
        self,
        events: Any,
        *,
        key: str = SENDGRID_KEY,
        timestamp: int | None = None,
        sign: bool = True,
        body: str | None = None,
        signed_body: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        body = json.dumps(events) if body is None else body
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/json"}
        if sign:
            headers["X-Twilio-Email-Event-Webhook-Timestamp"] = ts
            headers["X-Twilio-Email-Event-Webhook-Signature"] = signature or sendgrid_signature(
                key, ts, body if signed_body is None else signed_body
            )
        return self.http.post(self.endpoint("sendgrid"), content=body.encode(), headers=headers)

    def vonage(
        self,
        params: dict[str, str],
        *,
        secret: str = VONAGE_SECRET,
        method: str = "sha256",
        as_json: bool = False,
        sign: bool = True,
        timestamp: int | None = None,
    ) -> httpx.Response:
        params = {**params, "timestamp": str(int(time.time()) if timestamp is None else timestamp)}
        if sign:
            params["sig"] = vonage_signature(params, secret, method)
        if as_json:
            return self.http.post(self.endpoint("vonage"), json=params)
        return self.http.post(self.endpoint("vonage"), data=params)

    def mailchimp(
        self,
        events: Any,
        *,
        key: str = MAILCHIMP_KEY,
        sign: bool = True,
        form: dict[str, str] | None = None,
        path: str = "mailchimp",
    ) -> httpx.Response:
        form = {"mandrill_events": json.dumps(events)} if form is None else form
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Mandrill-Signature"] = mandrill_signature(key, self.endpoint(path), form)
        return self.http.post(self.endpoint(path), content=urlencode(form), headers=headers)


def mandrill_signature(key: str, url: str, form: dict[str, str]) -> str:
    """Mailchimp Transactional's documented webhook signature, written independently."""
    signed = url + "".join(k + v for k, v in sorted(form.items()))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), "sha1").digest()).decode()


def base_config(**overrides: Any) -> WebhookConfig:
    values: dict[str, Any] = dict(
        twilio_auth_token=TWILIO_TOKEN,
        sendgrid_public_key=SENDGRID_PUBLIC,
        vonage_signature_secret=VONAGE_SECRET,
        vonage_signature_method="sha256",
        mailchimp_webhook_key=MAILCHIMP_KEY,
        max_body_bytes=MAX_BODY,
        late_retry_interval_s=0.05,
        late_receipt_s=10.0,
    )
    values.update(overrides)
    return WebhookConfig(**values)


@pytest.fixture
def hooks_url(login: Any) -> str:
    """The service's own login, as deployed: a member of outbox_webhooks (sql/roles.sql),
    so every test here also shows that role may do all a receipt needs."""
    return login("outbox_webhooks")


@pytest.fixture
def serve(hooks_url: str) -> Iterator[Any]:
    """Start the service with a config (public URL = where it listens); stopped after the test."""
    running: list[WebhookThread] = []
    clients: list[httpx.Client] = []

    def start(config: WebhookConfig | None = None) -> Hooks:
        server = WebhookServer("127.0.0.1", 0)
        config = replace(config or base_config(), public_url=server.url)
        thread = WebhookThread(server, create_app(config, hooks_url, pool_size=2))
        thread.start()
        running.append(thread)
        clients.append(httpx.Client(timeout=10))
        return Hooks(server.url, clients[-1])

    yield start
    for client in clients:
        client.close()
    for thread in running:
        thread.stop()


@pytest.fixture
def hooks(serve: Any) -> Hooks:
    return serve()


@pytest.fixture
def world(conn: psycopg.Connection) -> psycopg.Connection:
    """Ann, with an email address and a phone; templates for every channel."""
    factories.recipient(conn, "ann", email=ANN_EMAIL, phone=ANN_PHONE)
    factories.templates(conn)
    conn.commit()
    return conn


def sent(
    conn: psycopg.Connection,
    db_url: str,
    provider: str,
    channel: str,
    message_id: str = "order-1",
    *,
    answers: dict[str, list[Outcome]] | None = None,
    **enqueue: Any,
) -> dict[str, Any]:
    """Enqueue one notification on ``channel``, send it with a worker; its delivery row.

    ``answers``: the provider's outcomes by destination (default: sent).
    """
    enqueue.setdefault("recipient", "ann")
    outbox.enqueue(
        conn,
        message_id,
        template="order_confirmed",
        data={"order": 1},
        channels=[channel],
        **enqueue,
    )
    conn.commit()

    async def work() -> None:
        worker = make_worker(db_url, ScriptedProvider(provider, answers))
        try:
            await worker.run_once()
        finally:
            await worker.close()

    asyncio.run(work())
    return delivery(conn, message_id)


def delivery(conn: psycopg.Connection, message_id: str) -> dict[str, Any]:
    row = conn.execute(
        """SELECT d.id, d.notification_id, d.status::text, d.provider, d.provider_message_id,
                  d.last_error, d.delivered_at, d.sent_at, d.destination
           FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id
           WHERE n.message_id = %s""",
        (message_id,),
    ).fetchone()
    conn.commit()
    assert row is not None
    keys = (
        "id",
        "notification_id",
        "status",
        "provider",
        "provider_message_id",
        "last_error",
        "delivered_at",
        "sent_at",
        "destination",
    )
    return dict(zip(keys, row, strict=True))


def events(conn: psycopg.Connection, kind: str | None = None) -> list[tuple[str, dict]]:
    rows = conn.execute(
        "SELECT kind, detail FROM outbox.events WHERE worker LIKE 'webhook:%%' "
        "AND (%s::text IS NULL OR kind = %s) ORDER BY id",
        (kind, kind),
    ).fetchall()
    conn.commit()
    return [(k, d) for k, d in rows]


def suppressions(conn: psycopg.Connection) -> dict[tuple[str, str], str]:
    rows = conn.execute(
        "SELECT channel::text, destination, reason FROM outbox.suppressions"
    ).fetchall()
    conn.commit()
    return {(c, d): r for c, d, r in rows}


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"outbox_webhook_{name}_total", labels) or 0.0


def wait_for(check: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def twilio_params(d: dict[str, Any], status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": d["provider_message_id"],
        "SmsSid": d["provider_message_id"],
        "MessageStatus": status,
        "SmsStatus": status,
        "To": d["destination"],
        **extra,
    }


def sendgrid_event(
    d: dict[str, Any] | None, event: str, *, ids: bool = True, email: str = ANN_EMAIL, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": secrets.token_urlsafe(16),
        "smtp-id": "<x@sandbox>",
    }
    if d is not None:
        doc["sg_message_id"] = f"{d['provider_message_id']}.filterdrecv-p3mdw1-1-2"
        if ids:
            doc["outbox_delivery_id"] = str(d["id"])
            doc["outbox_notification_id"] = str(d["notification_id"])
    doc.update(extra)
    return doc


# --- Twilio -------------------------------------------------------------------------------


def test_twilio_delivered_moves_sent_to_delivered(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    assert d["status"] == "sent" and d["provider_message_id"].startswith("twilio-")
    before = counter("receipts", provider="twilio", result="applied")

    response = hooks.twilio(twilio_params(d, "delivered"))

    assert response.status_code == 200, response.text
    after = delivery(world, "order-1")
    assert after["status"] == "delivered" and after["delivered_at"] >= after["sent_at"]
    (kind, detail), (moved_kind, moved) = events(world)
    assert kind == "receipt" and moved_kind == "delivered"
    assert detail["provider"] == "twilio" and detail["status"] == "delivered"
    assert detail["event_id"] == f"{d['provider_message_id']}:delivered"
    assert moved["receipt"] == detail["event_id"]
    assert not any(s in json.dumps(detail) for s in SECRETS)
    assert counter("receipts", provider="twilio", result="applied") == before + 1


def test_twilio_forged_unsigned_or_malformed_callbacks_change_nothing(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    params = twilio_params(d, "delivered")
    before = {
        r: counter("requests_rejected", provider="twilio", reason=r)
        for r in ("bad_signature", "unsigned", "malformed")
    }

    forged = hooks.twilio(params, token="f" * 32)
    other_url = hooks.twilio(params, url="https://evil.example.com/webhooks/twilio")
    tampered = hooks.http.post(
        hooks.endpoint("twilio"),
        data={**params, "MessageStatus": "undelivered"},
        headers={
            "X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, hooks.endpoint("twilio"), params)
        },
    )
    unsigned = hooks.twilio(params, sign=False)
    malformed = hooks.twilio(
        {k: v for k, v in params.items() if k not in ("MessageStatus", "SmsStatus")}
    )
    not_a_form = hooks.http.post(
        hooks.endpoint("twilio"), content=b"\xff\xfe=&&", headers={"X-Twilio-Signature": "abc"}
    )

    assert [r.status_code for r in (forged, other_url, tampered)] == [403, 403, 403]
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "unsigned"
    assert malformed.status_code == 400 and not_a_form.status_code == 400
    assert delivery(world, "order-1")["status"] == "sent"
    assert events(world) == []
    assert (
        counter("requests_rejected", provider="twilio", reason="bad_signature")
        == before["bad_signature"] + 3
    )
    assert (
        counter("requests_rejected", provider="twilio", reason="unsigned") == before["unsigned"] + 1
    )
    assert (
        counter("requests_rejected", provider="twilio", reason="malformed")
        == before["malformed"] + 2
    )


def test_twilio_replayed_callback_is_recorded_once(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    dupes = counter("receipts", provider="twilio", result="duplicate")
    for _ in range(3):
        assert hooks.twilio(twilio_params(d, "delivered")).status_code == 200
    assert [k for k, _ in events(world)] == ["receipt", "delivered"]
    assert counter("receipts", provider="twilio", result="duplicate") == dupes + 2


def test_twilio_out_of_order_sent_after_delivered_stays_delivered(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    assert hooks.twilio(twilio_params(d, "delivered")).status_code == 200
    assert hooks.twilio(twilio_params(d, "sent")).status_code == 200
    assert hooks.twilio(twilio_params(d, "undelivered", ErrorCode="30003")).status_code == 200
    assert delivery(world, "order-1")["status"] == "delivered"
    assert [(k, e.get("status")) for k, e in events(world)] == [
        ("receipt", "delivered"),
        ("delivered", None),
        ("receipt", "sent"),
        ("receipt", "undelivered"),
    ]


def test_twilio_undelivered_is_dead_with_the_error_code(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    assert hooks.twilio(twilio_params(d, "undelivered", ErrorCode="30003")).status_code == 200
    after = delivery(world, "order-1")
    assert after["status"] == "dead"
    assert after["last_error"] == (
        "Twilio undelivered: error 30003 (unreachable destination handset)"
    )
    assert suppressions(world) == {}  # the handset may be back tomorrow


def test_twilio_stop_records_an_sms_opt_out(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    assert hooks.twilio(twilio_params(d, "failed", ErrorCode="21610")).status_code == 200
    assert delivery(world, "order-1")["status"] == "dead"
    assert suppressions(world) == {
        ("sms", ANN_PHONE): "Twilio failed: error 21610 (recipient replied STOP)"
    }
    assert world.execute(
        "SELECT channel::text, category, opted_in FROM outbox.preferences"
    ).fetchall() == [("sms", "*", False)]
    world.commit()
    # The next SMS to that number is suppressed at enqueue; email still goes.
    outbox.enqueue(
        world,
        "order-2",
        recipient="ann",
        template="order_confirmed",
        data={"order": 2},
        channels=["sms", "email"],
    )
    world.commit()
    statuses = dict(
        world.execute(
            "SELECT d.channel::text, d.status::text FROM outbox.deliveries d "
            "JOIN outbox.notifications n ON n.id = d.notification_id WHERE n.message_id = 'order-2'"
        ).fetchall()
    )
    assert statuses == {"sms": "suppressed", "email": "pending"}


# --- SendGrid -----------------------------------------------------------------------------


def test_sendgrid_delivered_matches_our_ids_in_custom_args(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    batch = [sendgrid_event(d, "processed"), sendgrid_event(d, "delivered", response="250 OK")]
    response = hooks.sendgrid(batch)
    assert response.status_code == 200 and response.json() == {"received": 2, "new": 2}
    assert delivery(world, "order-1")["status"] == "delivered"
    assert [(k, e.get("status")) for k, e in events(world)] == [
        ("receipt", "processed"),
        ("receipt", "delivered"),
        ("delivered", None),
    ]


def test_sendgrid_without_custom_args_matches_the_x_message_id(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    assert hooks.sendgrid([sendgrid_event(d, "delivered", ids=False)]).status_code == 200
    assert delivery(world, "order-1")["status"] == "delivered"


def test_sendgrid_bounce_kills_the_delivery_and_suppresses_the_address(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    bounce = sendgrid_event(
        d,
        "bounce",
        type="bounce",
        status="5.1.1",
        reason="550 5.1.1 The email account does not exist",
    )
    assert hooks.sendgrid([bounce]).status_code == 200
    after = delivery(world, "order-1")
    assert after["status"] == "dead"
    assert after["last_error"] == (
        "SendGrid bounce: 5.1.1 550 5.1.1 The email account does not exist"
    )
    assert list(suppressions(world)) == [("email", ANN_EMAIL)]
    # A later "delivered" for the same message changes nothing.
    assert hooks.sendgrid([sendgrid_event(d, "delivered")]).status_code == 200
    assert delivery(world, "order-1")["status"] == "dead"
    # The next email to that address is suppressed when it is enqueued.
    outbox.enqueue(
        world,
        "order-2",
        recipient="ann",
        template="order_confirmed",
        data={"order": 2},
        channels=["email"],
    )
    world.commit()
    assert delivery(world, "order-2")["status"] == "suppressed"


def test_sendgrid_drops_kill_and_suppress_only_for_address_reasons(world, db_url, hooks):
    a = sent(world, db_url, "sendgrid", "email", "drop-a", recipient=None, address="a@example.com")
    b = sent(world, db_url, "sendgrid", "email", "drop-b", recipient=None, address="b@example.com")
    batch = [
        sendgrid_event(a, "dropped", email="a@example.com", reason="Bounced Address"),
        sendgrid_event(b, "dropped", email="b@example.com", reason="Spam Content"),
    ]
    assert hooks.sendgrid(batch).status_code == 200
    assert delivery(world, "drop-a")["status"] == delivery(world, "drop-b")["status"] == "dead"
    assert list(suppressions(world)) == [("email", "a@example.com")]


def test_sendgrid_deferred_and_blocked_are_recorded_only(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    batch = [
        sendgrid_event(d, "deferred", response="421 try later"),
        # A NUL (which PostgreSQL text cannot hold) must not fail the batch.
        sendgrid_event(
            d,
            "bounce",
            type="blocked",
            reason="temporarily\u0000 blocked",
            sg_event_id="evt\u0000nul",
        ),
    ]
    assert hooks.sendgrid(batch).status_code == 200
    assert delivery(world, "order-1")["status"] == "sent"
    assert [(k, e["status"]) for k, e in events(world)] == [
        ("receipt", "deferred"),
        ("receipt", "bounce"),
    ]
    assert suppressions(world) == {}


def test_sendgrid_spam_report_and_unsubscribe_are_email_opt_outs(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    direct = sent(
        world, db_url, "sendgrid", "email", "direct", recipient=None, address="nobody@example.com"
    )
    batch = [
        sendgrid_event(d, "delivered"),
        sendgrid_event(d, "spamreport"),
        sendgrid_event(direct, "unsubscribe", email="nobody@example.com"),
    ]
    assert hooks.sendgrid(batch).status_code == 200
    assert delivery(world, "order-1")["status"] == "delivered"
    assert world.execute(
        "SELECT channel::text, category, opted_in FROM outbox.preferences"
    ).fetchall() == [("email", "*", False)]
    world.commit()
    # An address no recipient owns cannot hold a preference: it is suppressed instead.
    assert suppressions(world) == {("email", "nobody@example.com"): "SendGrid unsubscribe"}


def test_sendgrid_replayed_batch_and_repeats_inside_a_batch_are_harmless(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    delivered = sendgrid_event(d, "delivered")
    batch = [delivered, delivered]
    assert hooks.sendgrid(batch).json() == {"received": 2, "new": 1}
    assert hooks.sendgrid(batch).json() == {"received": 2, "new": 0}
    assert [k for k, _ in events(world)] == ["receipt", "delivered"]


def test_sendgrid_forged_unsigned_stale_malformed_or_oversize_change_nothing(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    batch = [sendgrid_event(d, "delivered")]
    reasons = ("bad_signature", "unsigned", "stale", "malformed", "too_large")
    before = {r: counter("requests_rejected", provider="sendgrid", reason=r) for r in reasons}
    answers = {
        "other key": hooks.sendgrid(batch, key=make_apns_key()),
        "tampered": hooks.sendgrid(batch, signed_body=json.dumps([sendgrid_event(d, "processed")])),
        "not base64": hooks.sendgrid(batch, signature="%%%not-base64"),
        "unsigned": hooks.sendgrid(batch, sign=False),
        "stale": hooks.sendgrid(batch, timestamp=int(time.time()) - 3600),
        "future": hooks.sendgrid(batch, timestamp=int(time.time()) + 3600),
        "not json": hooks.sendgrid(None, body="delivered!"),
        "not a list": hooks.sendgrid({"event": "delivered"}),
        "no event": hooks.sendgrid([{"email": ANN_EMAIL}]),
        "oversize": hooks.sendgrid([sendgrid_event(d, "delivered", pad="x" * MAX_BODY)]),
    }
    assert {k: r.status_code for k, r in answers.items()} == {
        "other key": 403,
        "tampered": 403,
        "not base64": 403,
        "unsigned": 401,
        "stale": 403,
        "future": 403,
        "not json": 400,
        "not a list": 400,
        "no event": 400,
        "oversize": 413,
    }
    assert delivery(world, "order-1")["status"] == "sent"
    assert events(world) == []
    deltas = {
        r: counter("requests_rejected", provider="sendgrid", reason=r) - before[r] for r in reasons
    }
    assert deltas == {"bad_signature": 3, "unsigned": 1, "stale": 2, "malformed": 3, "too_large": 1}


# --- Vonage -------------------------------------------------------------------------------


def vonage_dlr(d: dict[str, Any], status: str, err_code: str = "0") -> dict[str, str]:
    return {
        "msisdn": d["destination"].lstrip("+"),
        "to": "Outbox",
        "network-code": "23410",
        "messageId": d["provider_message_id"],
        "price": "0.0333",
        "status": status,
        "scts": "2001011400",
        "err-code": err_code,
        "api-key": "abcd1234",
        "client-ref": str(d["id"]),
        "message-timestamp": "2020-01-01 12:00:00",
    }


def test_vonage_signature_matches_vonages_published_vector():
    # From Vonage's Python SDK tests: md5hash, secret "secret".
    params = {"a": "1", "b": "2", "timestamp": "1461605396"}
    assert vonage_signature(params, "secret", "md5hash") == "6af838ef94998832dbfc29020b564830"
    # The HMAC methods: &name=value pairs, sorted, keyed by the secret.
    signed = b"&a=1&b=2&timestamp=1461605396"
    for method in ("md5", "sha1", "sha256", "sha512"):
        expected = hmac.new(b"secret", signed, getattr(hashlib, method)).hexdigest()
        assert vonage_signature(params, "secret", method) == expected
    # '&' and '=' in values are replaced by '_' before signing.
    assert vonage_signature({"t": "a&b=c"}, "s", "sha1") == vonage_signature(
        {"t": "a_b_c"}, "s", "sha1"
    )


def test_vonage_signed_receipts_move_the_delivery(world, db_url, serve):
    hooks = serve(base_config(vonage_signature_method="md5hash"))
    a = sent(world, db_url, "vonage", "sms", "sms-a")
    b = sent(world, db_url, "vonage", "sms", "sms-b", recipient=None, address="+14155550199")
    assert hooks.vonage(vonage_dlr(a, "delivered"), method="md5hash").status_code == 200
    assert (
        hooks.vonage(vonage_dlr(b, "failed", "9"), method="md5hash", as_json=True).status_code
        == 200
    )
    assert delivery(world, "sms-a")["status"] == "delivered"
    dead = delivery(world, "sms-b")
    assert (dead["status"], dead["last_error"]) == (
        "dead",
        "Vonage failed: err-code 9 (illegal number)",
    )
    assert list(suppressions(world)) == [("sms", "+14155550199")]


def test_vonage_unsigned_forged_or_stale_receipts_change_nothing(world, db_url, hooks):
    d = sent(world, db_url, "vonage", "sms")
    dlr = vonage_dlr(d, "delivered")
    answers = [
        hooks.vonage(dlr, sign=False),
        hooks.vonage(dlr, secret="wrong-secret"),
        hooks.vonage(dlr, method="sha1"),
        hooks.vonage(dlr, timestamp=int(time.time()) - 3600),
        hooks.vonage({"status": "delivered"}),
        hooks.http.post(
            hooks.endpoint("vonage"), content=b"[1,2]", headers={"Content-Type": "application/json"}
        ),
    ]
    assert [r.status_code for r in answers] == [401, 403, 403, 403, 400, 400]
    assert delivery(world, "order-1")["status"] == "sent" and events(world) == []
    # The same DLR, signed and fresh, goes through.
    assert hooks.vonage(dlr).status_code == 200
    assert delivery(world, "order-1")["status"] == "delivered"


# --- Mailchimp Transactional (Mandrill) ---------------------------------------------------


def mailchimp_event(d: dict[str, Any], event: str, ts: int | None = None, **msg: Any) -> dict:
    ts = ts or int(time.time())
    return {
        "event": event,
        "_id": d["provider_message_id"],
        "ts": ts,
        "msg": {
            "_id": d["provider_message_id"],
            "ts": ts,
            "email": d["destination"],
            "state": "sent",
            "subject": "Order 1",
            "metadata": {
                "outbox_delivery_id": str(d["id"]),
                "outbox_notification_id": str(d["notification_id"]),
            },
            **msg,
        },
    }


def test_mailchimp_events_move_deliveries_and_suppress_hard_bounces(world, db_url, hooks):
    ok = sent(world, db_url, "mailchimp", "email", "mail-ok")
    bad = sent(
        world, db_url, "mailchimp", "email", "mail-bad", recipient=None, address="gone@example.com"
    )
    batch = [
        mailchimp_event(ok, "send"),
        mailchimp_event(ok, "open"),
        mailchimp_event(
            bad, "hard_bounce", bounce_description="bad_mailbox", diag="smtp;550 5.1.1 unknown user"
        ),
        {"type": "blacklist", "action": "add", "reject": {"email": "x@example.com"}},
    ]
    response = hooks.mailchimp(batch)
    assert response.status_code == 200 and response.json() == {"received": 3, "new": 3}
    assert delivery(world, "mail-ok")["status"] == "delivered"
    dead = delivery(world, "mail-bad")
    assert dead["status"] == "dead"
    assert dead["last_error"] == "Mandrill hard bounce: bad_mailbox smtp;550 5.1.1 unknown user"
    assert list(suppressions(world)) == [("email", "gone@example.com")]
    assert hooks.mailchimp(batch).json() == {"received": 3, "new": 0}  # a replay


def test_mailchimp_forged_unsigned_or_malformed_change_nothing(world, db_url, hooks):
    d = sent(world, db_url, "mailchimp", "email")
    batch = [mailchimp_event(d, "send")]
    answers = [
        hooks.mailchimp(batch, key="wrong"),
        hooks.mailchimp(batch, sign=False),
        hooks.mailchimp(None, form={"mandrill_events": "not json"}),
        hooks.mailchimp(None, form={"other": "[]"}),
    ]
    assert [r.status_code for r in answers] == [403, 401, 400, 400]
    assert delivery(world, "order-1")["status"] == "sent" and events(world) == []
    # Mandrill checks a new webhook URL with HEAD.
    assert hooks.http.head(hooks.endpoint("mailchimp")).status_code == 200


def test_mailchimp_receipts_still_arrive_at_the_old_mandrill_url(world, db_url, hooks):
    # Webhooks registered in Mandrill before the rename call /webhooks/mandrill, and
    # Mandrill signs the URL it calls: that path keeps working, verified as called.
    d = sent(world, db_url, "mailchimp", "email")
    batch = [mailchimp_event(d, "send")]
    assert hooks.http.head(hooks.endpoint("mandrill")).status_code == 200
    form = {"mandrill_events": json.dumps(batch)}
    signed_for_other_url = mandrill_signature(MAILCHIMP_KEY, hooks.endpoint("mailchimp"), form)
    forged = hooks.http.post(
        hooks.endpoint("mandrill"),
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Mandrill-Signature": signed_for_other_url,
        },
    )
    assert forged.status_code == 403 and events(world) == []
    response = hooks.mailchimp(batch, path="mandrill")
    assert response.status_code == 200 and response.json() == {"received": 1, "new": 1}
    assert delivery(world, "order-1")["status"] == "delivered"


# --- the service as a whole ---------------------------------------------------------------


def test_a_receipt_that_beats_the_workers_record_is_applied_late(world, db_url, hooks):
    outbox.enqueue(
        world,
        "race",
        recipient="ann",
        template="order_confirmed",
        data={"order": 1},
        channels=["email"],
    )
    world.commit()
    d = delivery(world, "race")
    # The worker has claimed it and is sending: the provider is faster than its record.
    world.execute(
        "UPDATE outbox.deliveries SET status = 'processing', attempts = 1, "
        "lease_owner = 'w1', lease_expires_at = now() + interval '30 seconds' "
        "WHERE id = %s",
        (d["id"],),
    )
    world.commit()
    late = counter("receipts", provider="sendgrid", result="applied_late")
    assert (
        hooks.sendgrid(
            [sendgrid_event({**d, "provider_message_id": "sg-race"}, "delivered")]
        ).status_code
        == 200
    )
    assert delivery(world, "race")["status"] == "processing"  # the worker's row: untouched
    assert [k for k, _ in events(world)] == ["receipt"]
    # The worker records the send; the held receipt then applies.
    world.execute(
        "UPDATE outbox.deliveries SET status = 'sent', sent_at = now(), "
        "lease_owner = NULL, lease_expires_at = NULL, provider = 'sendgrid', "
        "provider_message_id = 'sg-race' WHERE id = %s",
        (d["id"],),
    )
    world.commit()
    assert wait_for(lambda: delivery(world, "race")["status"] == "delivered")
    assert [k for k, _ in events(world)] == ["receipt", "delivered"]
    assert events(world, "delivered")[0][1]["late"] is True
    assert counter("receipts", provider="sendgrid", result="applied_late") == late + 1


def test_a_late_round_while_the_first_attempt_is_in_flight_keeps_the_receipt(
    world, db_url, hooks_url
):
    # Until the worker records its first attempt the delivery has no provider, so a
    # receipt cannot be checked against it yet: a round of late receipts run then must
    # keep the receipt for later, not forget it (which made the test above flaky).
    outbox.enqueue(
        world,
        "race",
        recipient="ann",
        template="order_confirmed",
        data={"order": 1},
        channels=["email"],
    )
    world.commit()
    d = delivery(world, "race")
    world.execute(
        "UPDATE outbox.deliveries SET status = 'processing', attempts = 1, "
        "lease_owner = 'w1', lease_expires_at = now() + interval '30 seconds' WHERE id = %s",
        (d["id"],),
    )
    world.commit()
    receipt = Receipt(
        "sendgrid", "early-1", "delivered", Action.DELIVERED, delivery_id=d["id"], address=ANN_EMAIL
    )

    async def rounds() -> tuple[store.Outcome, store.Outcome, store.Outcome]:
        async with await psycopg.AsyncConnection.connect(hooks_url, autocommit=True) as conn:
            (first,) = (await store.record(conn, [receipt])).outcomes
            (early,) = await store.apply_late(conn, [receipt])
            world.execute(
                "UPDATE outbox.deliveries SET status = 'sent', sent_at = now(), lease_owner = NULL,"
                " lease_expires_at = NULL, provider = 'sendgrid', provider_message_id = 'sg-r'"
                " WHERE id = %s",
                (d["id"],),
            )
            world.commit()
            (late,) = await store.apply_late(conn, [receipt])
            return first, early, late

    first, early, late = asyncio.run(rounds())
    assert first.waiting and not first.moved
    assert early.waiting and not early.moved and early.previous_status == "processing"
    assert late.moved and delivery(world, "race")["status"] == "delivered"


def test_delivered_receipt_for_an_in_doubt_retry_cancels_the_retry(world, db_url, hooks):
    # The send timed out after the request went out: pending for a retry, in doubt.
    d = sent(
        world,
        db_url,
        "sendgrid",
        "email",
        "doubt",
        answers={ANN_EMAIL: [Outcome.unknown("read timeout")]},
    )
    assert d["status"] == "pending" and d["provider_message_id"] is None
    # SendGrid had it after all: its receipt names our delivery id.
    assert (
        hooks.sendgrid(
            [sendgrid_event({**d, "provider_message_id": "sg-x"}, "delivered")]
        ).status_code
        == 200
    )
    after = delivery(world, "doubt")
    assert after["status"] == "delivered"  # the retry would have been a duplicate
    assert after["sent_at"] is not None and after["delivered_at"] >= after["sent_at"]
    assert after["provider"] == "sendgrid"
    ((kind, detail),) = events(world, "delivered")
    assert detail["retry_cancelled"] is True and "late" not in detail


def test_receipts_for_a_retry_with_a_known_outcome_or_a_bounce_wait_for_the_send(
    world, db_url, hooks
):
    # A 503 is a known failure: the provider did not take that attempt.
    d = sent(
        world,
        db_url,
        "sendgrid",
        "email",
        "known",
        answers={ANN_EMAIL: [Outcome.retry("503 Service Unavailable")]},
    )
    e = sent(
        world,
        db_url,
        "sendgrid",
        "email",
        "bounced",
        answers={ANN_EMAIL: [Outcome.unknown("read timeout")]},
    )
    assert (
        hooks.sendgrid(
            [
                sendgrid_event({**d, "provider_message_id": "sg-1"}, "delivered"),
                sendgrid_event(
                    {**e, "provider_message_id": "sg-2"},
                    "bounce",
                    type="blocked",
                    reason="550 mailbox full",
                ),
            ]
        ).status_code
        == 200
    )
    assert delivery(world, "known")["status"] == "pending"
    assert delivery(world, "bounced")["status"] == "pending"
    assert events(world, "delivered") == [] and events(world, "dead") == []


def test_a_provider_without_its_secret_is_refused(world, db_url, serve):
    hooks = serve(base_config(vonage_signature_secret=None, mailchimp_webhook_key=None))
    before = counter("requests_rejected", provider="vonage", reason="not_configured")
    response = hooks.http.post(hooks.endpoint("vonage"), data={"messageId": "x", "status": "ok"})
    assert response.status_code == 404 and response.json()["error"] == "not_configured"
    assert counter("requests_rejected", provider="vonage", reason="not_configured") == before + 1
    health = hooks.http.get(f"{hooks.url}/healthz")
    assert health.status_code == 200
    assert health.json()["providers"] == {
        "twilio": True,
        "sendgrid": True,
        "vonage": False,
        "mailchimp": False,
    }


def test_metrics_are_served_and_logs_carry_ids_but_no_secrets_or_bodies(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    with capture_logs() as logs:
        hooks.twilio(twilio_params(d, "delivered"), token="f" * 32)
        hooks.twilio(twilio_params(d, "delivered"))
    by_event = {entry["event"]: entry for entry in logs}
    assert by_event["webhooks.rejected"]["reason"] == "bad_signature"
    applied = by_event["receipt.applied"]
    assert (
        applied["delivery_id"],
        applied["message_id"],
        applied["channel"],
        applied["provider"],
        applied["attempt"],
        applied["status"],
    ) == (d["id"], "order-1", "sms", "twilio", 1, "delivered")
    text = json.dumps(logs, default=str)
    assert not any(s in text for s in SECRETS)
    assert ANN_PHONE not in text  # no request bodies
    scrape = hooks.http.get(f"{hooks.url}/metrics").text
    for series in (
        'requests_rejected_total{provider="twilio",reason="bad_signature"}',
        'receipts_total{provider="twilio",result="applied"}',
    ):
        assert f"outbox_webhook_{series}" in scrape


# --- end to end: worker -> sandbox -> signed receipts -> service ---------------------------


def test_end_to_end_sandbox_receipts_mark_deliveries_delivered(world, db_url, hooks_url, tmp_path):
    with Sandbox(tmp_path / "sandbox") as sandbox:
        assert sandbox.client is not None
        creds = sandbox.credentials
        server = WebhookServer("127.0.0.1", 0)
        config = base_config(
            public_url=server.url,
            twilio_auth_token=creds.twilio_auth_token,
            sendgrid_public_key=creds.sendgrid_webhook_public_key,
        )
        with WebhookThread(server, create_app(config, hooks_url, pool_size=2)):
            sandbox.client.set_webhooks(sendgrid=f"{server.url}/webhooks/sendgrid")
            settings = Settings(
                _env_file=None,
                **{
                    **sandbox.settings_values(),
                    "twilio_status_callback_url": f"{server.url}/webhooks/twilio",
                    "providers_email": ["sendgrid"],
                    "providers_sms": ["twilio"],
                    "providers_push": ["console"],
                    "provider_timeout_seconds": 5.0,
                },
            )
            outbox.enqueue(
                world,
                "e2e",
                recipient="ann",
                template="order_confirmed",
                data={"order": 7},
                channels=["email", "sms"],
            )
            world.commit()

            async def work() -> None:
                worker = Worker(
                    db_url,
                    build_providers(settings),
                    {"email": ["sendgrid"], "sms": ["twilio"]},
                    WorkerConfig(channels=("email", "sms")),
                )
                try:
                    assert await worker.run_once() == 2
                finally:
                    await worker.close()
                    await worker.router.aclose()

            asyncio.run(work())

            def statuses() -> dict[str, str]:
                rows = world.execute(
                    "SELECT provider, status::text FROM outbox.deliveries"
                ).fetchall()
                world.commit()
                return dict(rows)

            assert wait_for(
                lambda: statuses() == {"sendgrid": "delivered", "twilio": "delivered"}
            ), statuses()
            receipts = sandbox.client.wait_for_receipts(
                "twilio", 2
            ) + sandbox.client.wait_for_receipts("sendgrid", 1)
            assert {r["status"] for r in receipts} == {200}
            kinds = [(e["provider"], e["status"]) for _, e in events(world, "receipt")]
            assert sorted(kinds) == [
                ("sendgrid", "delivered"),
                ("sendgrid", "processed"),
                ("twilio", "delivered"),
                ("twilio", "sent"),
            ]


# --- a receipt moves only what its own provider sent --------------------------------------
# Our ids travel in fields anyone sending through the same provider account can set
# (SendGrid custom_args, Mandrill metadata, Vonage client-ref), and they are sequential.


def test_a_sendgrid_event_naming_a_mailchimp_delivery_changes_nothing(world, db_url, hooks):
    d = sent(world, db_url, "mailchimp", "email")
    forged = {"event": "delivered", "sg_event_id": "sgev3", "outbox_delivery_id": str(d["id"])}
    before = counter("receipts", provider="sendgrid", result="mismatched")
    assert hooks.sendgrid([forged]).status_code == 200
    assert delivery(world, "order-1")["status"] == "sent"
    [(kind, detail)] = events(world)
    assert (kind, detail["matched"], detail["mismatch"]) == ("receipt", False, "provider")
    assert counter("receipts", provider="sendgrid", result="mismatched") == before + 1
    # Mandrill, which sent it, still moves it.
    assert hooks.mailchimp([mailchimp_event(d, "send")]).status_code == 200
    assert delivery(world, "order-1")["status"] == "delivered"


def test_a_mandrill_bounce_naming_a_sendgrid_delivery_and_another_address_changes_nothing(
    world, db_url, hooks
):
    d = sent(world, db_url, "sendgrid", "email")
    forged = {
        "event": "hard_bounce",
        "_id": "ZZ",
        "ts": int(time.time()),
        "msg": {"email": "victim@example.com", "metadata": {"outbox_delivery_id": str(d["id"])}},
    }
    assert hooks.mailchimp([forged]).status_code == 200
    assert delivery(world, "order-1")["status"] == "sent"
    assert suppressions(world) == {}  # neither the delivery's address nor the event's
    [(_, detail)] = events(world)
    assert (detail["matched"], detail["mismatch"]) == (False, "provider")
    # SendGrid's own bounce still kills it and suppresses the address.
    bounce = sendgrid_event(d, "bounce", reason="550 5.1.1 unknown user")
    assert hooks.sendgrid([bounce]).status_code == 200
    assert delivery(world, "order-1")["status"] == "dead"
    assert list(suppressions(world)) == [("email", ANN_EMAIL)]


def test_a_receipt_naming_our_delivery_with_another_address_changes_nothing(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    bounce = sendgrid_event(d, "bounce", email="victim@example.com", reason="550 unknown user")
    assert hooks.sendgrid([bounce]).status_code == 200
    assert delivery(world, "order-1")["status"] == "sent"
    assert suppressions(world) == {}
    [(_, detail)] = events(world)
    assert (detail["matched"], detail["mismatch"]) == (False, "destination")
    # The right address, in whatever case the provider writes it, still matches.
    delivered = sendgrid_event(d, "delivered", email=" " + ANN_EMAIL.upper())
    assert hooks.sendgrid([delivered]).status_code == 200
    assert delivery(world, "order-1")["status"] == "delivered"


def test_a_vonage_receipt_naming_a_twilio_delivery_changes_nothing(world, db_url, hooks):
    d = sent(world, db_url, "twilio", "sms")
    dlr = {**vonage_dlr(d, "failed", "3"), "messageId": "vonage-other"}
    assert hooks.vonage(dlr).status_code == 200
    assert delivery(world, "order-1")["status"] == "sent"
    assert suppressions(world) == {}
    [(_, detail)] = events(world)
    assert (detail["matched"], detail["mismatch"]) == (False, "provider")


def test_a_receipt_that_beats_another_providers_record_never_applies(world, db_url, hooks):
    # While a delivery is in flight its provider is not recorded yet, so a receipt
    # naming it waits; once the worker records who sent it, the provider is checked.
    outbox.enqueue(
        world,
        "race",
        recipient="ann",
        template="order_confirmed",
        data={"order": 1},
        channels=["email"],
    )
    world.commit()
    d = delivery(world, "race")
    world.execute(
        "UPDATE outbox.deliveries SET status = 'processing', attempts = 1, "
        "lease_owner = 'w1', lease_expires_at = now() + interval '30 seconds' WHERE id = %s",
        (d["id"],),
    )
    world.commit()
    forged = sendgrid_event({**d, "provider_message_id": "sg-forged"}, "delivered")
    assert hooks.sendgrid([forged]).status_code == 200
    world.execute(
        "UPDATE outbox.deliveries SET status = 'sent', sent_at = now(), lease_owner = NULL, "
        "lease_expires_at = NULL, provider = 'mailchimp', provider_message_id = 'md-1' "
        "WHERE id = %s",
        (d["id"],),
    )
    world.commit()
    time.sleep(0.5)  # ten rounds of late receipts (late_retry_interval_s = 0.05)
    assert delivery(world, "race")["status"] == "sent"
    assert [k for k, _ in events(world)] == ["receipt"]


# --- malformed bodies are refused, never a crash ----------------------------------------------

DEEP = "[" * 3000 + "]" * 3000  # past the parser's recursion limit, under every size cap


def test_unsigned_deep_json_to_vonage_is_refused_as_malformed(world, db_url, hooks, caplog):
    sent(world, db_url, "vonage", "sms")
    rejected = {r: counter("requests_rejected", provider="vonage", reason=r) for r in REASONS}
    json_headers = {"Content-Type": "application/json"}
    with capture_logs() as logs:
        deep = hooks.http.post(hooks.endpoint("vonage"), content=DEEP, headers=json_headers)
        # The finding's body (40 KB): a delivery receipt is never that big.
        huge = "[" * 20000 + "]" * 20000
        big = hooks.http.post(hooks.endpoint("vonage"), content=huge, headers=json_headers)
        nan = hooks.http.post(
            hooks.endpoint("vonage"), content='{"timestamp": NaN}', headers=json_headers
        )
    assert (deep.status_code, deep.json()["error"]) == (400, "malformed")
    assert (big.status_code, big.json()["error"]) == (413, "too_large")
    assert (nan.status_code, nan.json()["error"]) == (400, "malformed")
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("webhooks.rejected", "malformed"),
        ("webhooks.rejected", "too_large"),
        ("webhooks.rejected", "malformed"),
    ]
    assert not [r for r in caplog.records if r.exc_info]
    deltas = {
        r: counter("requests_rejected", provider="vonage", reason=r) - rejected[r] for r in REASONS
    }
    assert deltas == {**dict.fromkeys(REASONS, 0.0), "malformed": 2.0, "too_large": 1.0}
    assert events(world) == []


def test_signed_deep_json_is_malformed_for_sendgrid_and_mandrill(world, db_url, hooks, caplog):
    answers = {
        "sendgrid": hooks.sendgrid(None, body=DEEP),
        "mailchimp": hooks.mailchimp(None, form={"mandrill_events": DEEP}),
    }
    assert {p: (r.status_code, r.json()["error"]) for p, r in answers.items()} == {
        "sendgrid": (400, "malformed"),
        "mailchimp": (400, "malformed"),
    }
    assert not [r for r in caplog.records if r.exc_info]


# --- one bad event never fails the good ones in its batch -------------------------------------


def test_one_out_of_range_id_does_not_fail_the_rest_of_a_sendgrid_batch(world, db_url, hooks):
    d = sent(world, db_url, "sendgrid", "email")
    good = {
        "event": "delivered",
        "sg_event_id": "w12",
        "sg_message_id": f"{d['provider_message_id']}.x",
    }
    bad = {"event": "open", "sg_event_id": "w13", "outbox_notification_id": 2**63}
    worse = {"event": "open", "sg_event_id": "w14", "outbox_delivery_id": 2**70}
    response = hooks.sendgrid([good, bad, worse])
    assert response.status_code == 200 and response.json() == {"received": 3, "new": 3}
    assert delivery(world, "order-1")["status"] == "delivered"
    receipts = {e["event_id"]: e["matched"] for _, e in events(world, "receipt")}
    assert receipts == {"w12": True, "w13": False, "w14": False}


def test_a_receipt_the_database_refuses_is_recorded_alone_as_refused(world, db_url, hooks_url):
    # What Python does not catch (here: an id no provider module would pass on) costs
    # that receipt only: the others of its batch are recorded and applied.
    d = sent(world, db_url, "sendgrid", "email")
    good = Receipt(
        "sendgrid", "ok-1", "delivered", Action.DELIVERED, delivery_id=d["id"], address=ANN_EMAIL
    )
    bad = Receipt("sendgrid", "bad-1", "delivered", Action.DELIVERED, delivery_id=2**63)

    async def record() -> store.Recorded:
        async with await psycopg.AsyncConnection.connect(hooks_url, autocommit=True) as conn:
            return await store.record(conn, [bad, good])

    recorded = asyncio.run(record())
    assert [(o.receipt.event_id, o.refused, o.moved) for o in recorded.outcomes] == [
        ("bad-1", "NumericValueOutOfRange", False),
        ("ok-1", None, True),
    ]
    assert delivery(world, "order-1")["status"] == "delivered"
    receipts = {e["event_id"]: e for _, e in events(world, "receipt")}
    assert receipts["bad-1"]["refused"] == "NumericValueOutOfRange"
    assert receipts["bad-1"]["matched"] is False and receipts["ok-1"]["matched"] is True


# --- /healthz: the database answers, at the schema this Outbox needs ---------------------------


def health(url: str, config: WebhookConfig | None = None, **app: Any) -> Iterator[httpx.Client]:
    server = WebhookServer("127.0.0.1", 0)
    config = replace(config or base_config(), public_url=server.url)
    with (
        WebhookThread(server, create_app(config, url, pool_size=1, **app)),
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield client


def test_healthz_is_ok_at_the_schema_this_outbox_needs(hooks_url):
    # As the service's own role: it may read the schema revision (sql/roles.sql).
    for client in health(hooks_url):
        answer = client.get("/healthz")
        assert answer.status_code == 200
        assert answer.json()["status"] == "ok" and answer.json()["schema"] == migrate.head()


def test_healthz_is_503_with_the_reason_without_the_schema(empty_db_url):
    for client in health(empty_db_url):
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "schema not ready"
        assert "the outbox schema is not installed" in answer.json()["reason"]
        assert "run `outbox migrate`" in answer.json()["reason"]


def test_healthz_is_503_when_the_database_does_not_answer():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    url = f"postgresql://someone:hunter2@127.0.0.1:{port}/nowhere"
    for client in health(url):
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "database unavailable"
        assert "hunter2" not in answer.text


def test_healthz_caches_the_schema_check_briefly(db_url, conn):
    # A cache long enough that a loaded machine answers the second probe inside it.
    for client in health(db_url, health_cache_s=3.0):
        assert client.get("/healthz").status_code == 200
        conn.execute("UPDATE outbox_alembic_version SET version_num = '0001'")
        conn.commit()
        # Within the cache: the probe does not ask the database again.
        assert client.get("/healthz").status_code == 200
        time.sleep(3.1)
        behind = client.get("/healthz")
        assert behind.status_code == 503
        assert "is at revision 0001, this Outbox needs" in behind.json()["reason"]
