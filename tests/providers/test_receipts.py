"""Receipts the sandbox sends back are signed as the providers sign them.

Verified with the providers' own SDK validators: twilio's RequestValidator
and sendgrid's EventWebhook, using the verification key from the settings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from outbox.providers.base import OutcomeKind
from outbox.sandbox import Sandbox
from outbox.sandbox.receipts import RECEIPT_ATTEMPTS
from tests.providers.cases import EMAIL, PHONE, adapter, message

pytestmark = pytest.mark.anyio


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on a free loopback port that keeps what it is sent."""

    def __init__(self) -> None:
        received: list[Received] = []
        self.received = received
        # Statuses to answer with first, in order (then 200): a receiver having trouble.
        self.answers: list[int] = []
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(answers.pop(0) if answers else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


async def test_twilio_status_callbacks_are_signed_with_the_auth_token(
    sandbox: Sandbox, make_settings, receiver: Receiver
):
    callback = f"{receiver.url}/hooks/twilio?tenant=7"
    async with adapter(make_settings(twilio_status_callback_url=callback), "twilio") as provider:
        outcome = await provider.send(message("sms", PHONE))
    assert outcome.kind is OutcomeKind.SENT

    receipts = sandbox.client.wait_for_receipts("twilio", 2)
    assert [r["events"] for r in receipts] == [["sent"], ["delivered"]]
    assert all(r["status"] == 200 for r in receipts)
    validator = RequestValidator(sandbox.credentials.twilio_auth_token)
    assert len(receiver.received) == 2
    for got in receiver.received:
        params = dict(parse_qsl(got.body.decode()))
        assert params["MessageSid"] == outcome.provider_message_id
        assert params["To"] == PHONE
        assert validator.validate(callback, params, got.headers["X-Twilio-Signature"])
        # A forged field, or another auth token, fails validation.
        forged = {**params, "MessageStatus": "failed"}
        assert not validator.validate(callback, forged, got.headers["X-Twilio-Signature"])
        other = RequestValidator("0" * 32)
        assert not other.validate(callback, params, got.headers["X-Twilio-Signature"])
    statuses = [dict(parse_qsl(g.body.decode()))["MessageStatus"] for g in receiver.received]
    assert statuses == ["sent", "delivered"]


async def _sendgrid_events(sandbox: Sandbox, make_settings, receiver: Receiver, destination: str):
    sandbox.client.set_webhooks(sendgrid=f"{receiver.url}/hooks/sendgrid")
    m = message("email", destination)
    async with adapter(make_settings(), "sendgrid") as provider:
        outcome = await provider.send(m)
    assert outcome.kind is OutcomeKind.SENT
    sandbox.client.wait_for_receipts("sendgrid", 1)
    [got] = receiver.received
    return m, outcome, got


async def test_sendgrid_events_are_signed_and_carry_our_ids(
    sandbox: Sandbox, make_settings, receiver: Receiver
):
    m, outcome, got = await _sendgrid_events(sandbox, make_settings, receiver, EMAIL)

    public_key = make_settings().sendgrid_webhook_public_key
    verifier = EventWebhook(public_key)
    body = got.body.decode()
    signature = got.headers["X-Twilio-Email-Event-Webhook-Signature"]
    timestamp = got.headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    assert verifier.verify_signature(body, signature, timestamp)
    assert not verifier.verify_signature(body.replace("delivered", "bounce"), signature, timestamp)
    assert not verifier.verify_signature(body, signature, str(int(timestamp) + 1))

    events = json.loads(body)
    assert [e["event"] for e in events] == ["processed", "delivered"]
    for event in events:
        assert event["email"] == EMAIL
        assert event["outbox_delivery_id"] == str(m.delivery_id)
        assert event["outbox_message_id"] == m.message_id
        assert event["sg_message_id"].startswith(outcome.provider_message_id)
    assert len({e["sg_event_id"] for e in events}) == 2


async def test_sendgrid_dead_address_is_accepted_then_bounces(
    sandbox: Sandbox, make_settings, receiver: Receiver
):
    sandbox.client.set_faults({"providers": {"sendgrid": {"dead": ["gone@example.com"]}}})
    _, _, got = await _sendgrid_events(sandbox, make_settings, receiver, "gone@example.com")
    events = json.loads(got.body)
    assert [e["event"] for e in events] == ["processed", "bounce"]
    assert events[1]["type"] == "bounce"


async def test_unreachable_receiver_is_recorded(sandbox: Sandbox, make_settings):
    sandbox.client.set_webhooks(sendgrid="http://127.0.0.1:9/closed")
    async with adapter(make_settings(), "sendgrid") as provider:
        assert (await provider.send(message("email", EMAIL))).kind is OutcomeKind.SENT
    # Recorded once, after every attempt and the backoff between them (3.75 s).
    [receipt] = sandbox.client.wait_for_receipts("sendgrid", 1, timeout_s=15)
    assert receipt["status"] is None
    assert receipt["error"] == "ConnectError"
    assert receipt["attempts"] == RECEIPT_ATTEMPTS
    assert sandbox.client.receipts_pending() == 0


async def test_a_receipt_the_receiver_fails_is_posted_again(
    sandbox: Sandbox, make_settings, receiver: Receiver
):
    # A receiver whose database is busy answers 503; the provider tries again.
    receiver.answers[:] = [503, 500]
    sandbox.client.set_webhooks(sendgrid=f"{receiver.url}/hooks/sendgrid")
    async with adapter(make_settings(), "sendgrid") as provider:
        assert (await provider.send(message("email", EMAIL))).kind is OutcomeKind.SENT
    [receipt] = sandbox.client.wait_for_receipts("sendgrid", 1)
    assert (receipt["status"], receipt["error"], receipt["attempts"]) == (200, None, 3)
    assert len(receiver.received) == 3
    assert len({got.body for got in receiver.received}) == 1
    verifier = EventWebhook(make_settings().sendgrid_webhook_public_key)
    for got in receiver.received:
        signature = got.headers["X-Twilio-Email-Event-Webhook-Signature"]
        timestamp = got.headers["X-Twilio-Email-Event-Webhook-Timestamp"]
        assert verifier.verify_signature(got.body.decode(), signature, timestamp)
    assert sandbox.client.receipts_pending() == 0


async def test_a_receipt_the_receiver_refuses_is_not_posted_again(
    sandbox: Sandbox, make_settings, receiver: Receiver
):
    # 403 (a bad signature, say) will not change by asking again.
    receiver.answers[:] = [403]
    sandbox.client.set_webhooks(sendgrid=f"{receiver.url}/hooks/sendgrid")
    async with adapter(make_settings(), "sendgrid") as provider:
        assert (await provider.send(message("email", EMAIL))).kind is OutcomeKind.SENT
    [receipt] = sandbox.client.wait_for_receipts("sendgrid", 1)
    assert (receipt["status"], receipt["attempts"]) == (403, 1)
    assert len(receiver.received) == 1
