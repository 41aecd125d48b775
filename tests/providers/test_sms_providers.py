"""Twilio and Vonage: error-code mapping and what each request carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outbox.providers.base import OutcomeKind
from outbox.sandbox import Sandbox
from tests.providers.cases import PHONE, adapter, message

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("21211", OutcomeKind.DEAD_DESTINATION),
        ("21614", OutcomeKind.DEAD_DESTINATION),
        ("21612", OutcomeKind.DEAD_DESTINATION),
        ("21610", OutcomeKind.DEAD_DESTINATION),
        ("21617", OutcomeKind.PERMANENT),
        ("21999", OutcomeKind.PERMANENT),
        ("20003", OutcomeKind.CONFIG),
        ("21606", OutcomeKind.CONFIG),
        ("21608", OutcomeKind.CONFIG),
        ("21408", OutcomeKind.CONFIG),
        ("20429", OutcomeKind.RETRY),
        ("20500", OutcomeKind.UNKNOWN),
        ("20503", OutcomeKind.UNKNOWN),
    ],
)
async def test_twilio_code_mapping(sandbox: Sandbox, make_settings, code: str, kind: OutcomeKind):
    sandbox.client.set_faults({"providers": {"twilio": {"script": [code]}}})
    async with adapter(make_settings(), "twilio") as provider:
        outcome = await provider.send(message("sms", PHONE))
    assert outcome.kind is kind, outcome
    assert outcome.detail["code"] == int(code)
    # Only a STOP reply is an opt-out; other dead numbers are just dead.
    if kind is OutcomeKind.DEAD_DESTINATION:
        assert outcome.detail["opt_out"] is (code == "21610")


async def test_twilio_request_fields(sandbox: Sandbox, make_settings):
    expires = datetime.now(UTC) + timedelta(hours=2)
    settings = make_settings(twilio_status_callback_url="https://example.com/hooks/twilio")
    async with adapter(settings, "twilio") as provider:
        sent = await provider.send(message("sms", PHONE, expires_at=expires))
        never = await provider.send(message("sms", PHONE))
    assert sent.kind is never.kind is OutcomeKind.SENT
    with_expiry, without = sandbox.client.requests("twilio")
    assert with_expiry["fields"]["From"] == sandbox.credentials.twilio_from_number
    assert with_expiry["fields"]["StatusCallback"] == "https://example.com/hooks/twilio"
    assert 7190 <= int(with_expiry["fields"]["ValidityPeriod"]) <= 7200
    assert without["fields"]["ValidityPeriod"] is None


async def test_twilio_validity_period_is_capped_at_ten_hours(sandbox: Sandbox, make_settings):
    expires = datetime.now(UTC) + timedelta(days=2)
    async with adapter(make_settings(), "twilio") as provider:
        assert (await provider.send(message("sms", PHONE, expires_at=expires))).kind is (
            OutcomeKind.SENT
        )
    [request] = sandbox.client.requests("twilio")
    assert request["fields"]["ValidityPeriod"] == "36000"


async def test_twilio_does_not_send_with_under_a_second_to_live(sandbox: Sandbox, make_settings):
    # Its validity period is whole seconds, at least 1: 0.5 s left would be 0, or refused.
    expires = datetime.now(UTC) + timedelta(milliseconds=500)
    async with adapter(make_settings(), "twilio") as provider:
        outcome = await provider.send(message("sms", PHONE, expires_at=expires))
    assert outcome.kind is OutcomeKind.PERMANENT and outcome.detail == {"error": "expired"}
    assert sandbox.client.requests("twilio") == []


async def test_twilio_messaging_service_replaces_the_from_number(sandbox: Sandbox, make_settings):
    service = "MG" + "0" * 32
    settings = make_settings(twilio_from_number=None, twilio_messaging_service_sid=service)
    async with adapter(settings, "twilio") as provider:
        outcome = await provider.send(message("sms", PHONE))
    assert outcome.kind is OutcomeKind.SENT
    assert outcome.detail["status"] == "accepted"
    [request] = sandbox.client.requests("twilio")
    assert request["fields"]["MessagingServiceSid"] == service
    assert request["fields"]["From"] is None


async def test_twilio_invalid_number_is_refused_by_the_sandbox_itself(
    sandbox: Sandbox, make_settings
):
    async with adapter(make_settings(), "twilio") as provider:
        outcome = await provider.send(message("sms", "555-1234"))
    assert outcome.kind is OutcomeKind.DEAD_DESTINATION
    assert outcome.detail["code"] == 21211


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("1", OutcomeKind.RETRY),
        ("5", OutcomeKind.RETRY),
        ("2", OutcomeKind.PERMANENT),
        ("3", OutcomeKind.PERMANENT),
        ("4", OutcomeKind.CONFIG),
        ("9", OutcomeKind.CONFIG),
        ("29", OutcomeKind.CONFIG),
        ("6", OutcomeKind.DEAD_DESTINATION),
        ("7", OutcomeKind.DEAD_DESTINATION),
    ],
)
async def test_vonage_status_mapping(
    sandbox: Sandbox, make_settings, status: str, kind: OutcomeKind
):
    sandbox.client.set_faults({"providers": {"vonage": {"script": [status]}}})
    async with adapter(make_settings(), "vonage") as provider:
        outcome = await provider.send(message("sms", PHONE))
    assert outcome.kind is kind, outcome
    assert outcome.detail["code"] == status


async def test_vonage_request_fields(sandbox: Sandbox, make_settings):
    expires = datetime.now(UTC) + timedelta(minutes=30)
    m = message("sms", PHONE, body="Grüße " + "x" * 100, expires_at=expires)
    async with adapter(make_settings(), "vonage") as provider:
        outcome = await provider.send(m)
    assert outcome.kind is OutcomeKind.SENT
    [request] = sandbox.client.requests("vonage")
    assert request["destination"] == PHONE.lstrip("+")
    assert request["ids"] == {"client_ref": str(m.delivery_id)}
    assert request["fields"]["type"] == "unicode"
    assert 1_790_000 <= int(request["fields"]["ttl"]) <= 1_800_000
    # 106 unicode characters take two parts; sent means both were accepted.
    assert outcome.detail["parts"] == 2
    assert outcome.provider_message_id == outcome.detail["message_ids"][0]
