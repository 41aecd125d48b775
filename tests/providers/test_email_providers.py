"""SendGrid and Mailchimp Transactional: our ids on the wire, error mapping, SDK logging."""

from __future__ import annotations

import pytest

from outbox.providers.base import OutcomeKind
from outbox.sandbox import Sandbox
from tests.providers.cases import EMAIL, adapter, message

pytestmark = pytest.mark.anyio


async def test_sendgrid_custom_args_arrive_and_message_id_is_kept(sandbox: Sandbox, make_settings):
    m = message("email", EMAIL, html_body="<p>Your code is 123456</p>")
    async with adapter(make_settings(), "sendgrid") as provider:
        outcome = await provider.send(m)

    assert outcome.kind is OutcomeKind.SENT
    [request] = sandbox.client.requests("sendgrid")
    assert request["ids"]["custom_args"] == {
        "outbox_delivery_id": str(m.delivery_id),
        "outbox_notification_id": str(m.notification_id),
        "outbox_message_id": m.message_id,
    }
    assert outcome.provider_message_id == request["provider_message_id"]
    assert request["fields"]["subject"] == "Your code"
    assert request["fields"]["from"] == sandbox.credentials.sendgrid_from_email


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("400", OutcomeKind.PERMANENT),
        ("413", OutcomeKind.PERMANENT),
        ("401", OutcomeKind.CONFIG),
        ("403", OutcomeKind.CONFIG),
        ("429", OutcomeKind.RETRY),
        ("500", OutcomeKind.UNKNOWN),
        ("503", OutcomeKind.UNKNOWN),
    ],
)
async def test_sendgrid_status_mapping(
    sandbox: Sandbox, make_settings, status: str, kind: OutcomeKind
):
    sandbox.client.set_faults({"providers": {"sendgrid": {"script": [status]}}})
    async with adapter(make_settings(), "sendgrid") as provider:
        outcome = await provider.send(message("email", EMAIL))
    assert outcome.kind is kind, outcome
    assert outcome.detail["status"] == int(status)


async def test_sendgrid_debug_logging_never_shows_the_api_key(
    sandbox: Sandbox, make_settings, debug_logs
):
    async with adapter(make_settings(), "sendgrid") as provider:
        assert (await provider.send(message("email", EMAIL))).kind is OutcomeKind.SENT
    [request] = sandbox.client.requests("sendgrid")
    assert request["answer"] == "ok"  # the sandbox saw the key, so the request carried it
    assert sandbox.credentials.sendgrid_api_key not in debug_logs.text


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("hard-bounce", OutcomeKind.DEAD_DESTINATION),
        ("unsub", OutcomeKind.DEAD_DESTINATION),
        ("spam", OutcomeKind.DEAD_DESTINATION),
        ("invalid", OutcomeKind.DEAD_DESTINATION),
        ("soft-bounce", OutcomeKind.RETRY),
        ("invalid-sender", OutcomeKind.CONFIG),
        ("rule", OutcomeKind.PERMANENT),
        ("Invalid_Key", OutcomeKind.CONFIG),
        ("PaymentRequired", OutcomeKind.CONFIG),
        ("ValidationError", OutcomeKind.PERMANENT),
        ("GeneralError", OutcomeKind.RETRY),
    ],
)
async def test_mailchimp_mapping(sandbox: Sandbox, make_settings, answer: str, kind: OutcomeKind):
    sandbox.client.set_faults({"providers": {"mailchimp": {"script": [answer]}}})
    async with adapter(make_settings(), "mailchimp") as provider:
        outcome = await provider.send(message("email", EMAIL))
    assert outcome.kind is kind, outcome


async def test_mailchimp_metadata_and_invalid_address(sandbox: Sandbox, make_settings):
    m = message("email", EMAIL)
    async with adapter(make_settings(), "mailchimp") as provider:
        sent = await provider.send(m)
        invalid = await provider.send(message("email", "not-an-address"))
    assert sent.kind is OutcomeKind.SENT
    assert invalid.kind is OutcomeKind.DEAD_DESTINATION
    assert invalid.detail["status"] == "invalid"
    first = sandbox.client.requests("mailchimp")[0]
    assert first["ids"]["metadata"]["outbox_delivery_id"] == str(m.delivery_id)
    assert first["provider_message_id"] == sent.provider_message_id
