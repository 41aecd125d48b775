"""Every adapter through the same cases, against the provider sandbox over real sockets.

One case per outcome class: sent; retry with the provider's wait; permanent;
dead destination; config (credentials the provider refuses); unknown (the
request left and no answer came back in time); retry when the provider
cannot be reached at all; and permanent, without a request, for a message
whose expiry has passed. Each case also checks that no secret reached the
outcome or the logs.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from outbox.providers.base import OutcomeKind
from outbox.sandbox import Sandbox
from tests.providers.cases import SPECS, Spec, adapter, assert_no_secrets, message_for

pytestmark = pytest.mark.anyio

by_name = pytest.mark.parametrize("spec", SPECS, ids=str)


def _closed_port_url(scheme: str = "http") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there now: connecting is refused.
    return f"{scheme}://127.0.0.1:{port}"


@by_name
async def test_sent(spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs):
    async with adapter(make_settings(), spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    assert outcome.kind is OutcomeKind.SENT, outcome
    [request] = sandbox.client.requests(spec.name)
    assert request["answer"] == "ok"
    assert request["destination"] == spec.seen_as
    assert outcome.provider_message_id == request["provider_message_id"]
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)


@by_name
async def test_rate_limited_retries_after_the_providers_wait(
    spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs
):
    sandbox.client.set_faults(
        {"providers": {spec.name: {"script": ["rate_limited"], "retry_after_s": 7}}}
    )
    async with adapter(make_settings(), spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    assert outcome.kind is OutcomeKind.RETRY, outcome
    # SendGrid gives an epoch reset time rather than seconds: allow the clock tick.
    assert outcome.retry_after == pytest.approx(7, abs=1.1)
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)


@by_name
async def test_permanent(spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs):
    sandbox.client.set_faults({"providers": {spec.name: {"script": [spec.permanent]}}})
    async with adapter(make_settings(), spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    assert outcome.kind is OutcomeKind.PERMANENT, outcome
    assert outcome.reason
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)


@by_name
async def test_dead_destination(
    spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs
):
    sandbox.client.set_faults({"providers": {spec.name: {"dead": [spec.seen_as]}}})
    async with adapter(make_settings(), spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    [request] = sandbox.client.requests(spec.name)
    assert request["answer"] == "dead"
    if spec.dead_at_send:
        assert outcome.kind is OutcomeKind.DEAD_DESTINATION, outcome
    else:
        # Accepted now; the bounce arrives on the event webhook (test_receipts).
        assert outcome.kind is OutcomeKind.SENT, outcome
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)


@pytest.mark.parametrize("spec", SPECS, ids=str)
async def test_config_when_credentials_are_refused(
    spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs, tmp_path
):
    overrides = dict(spec.wrong_credentials)
    if spec.name == "apns":
        from outbox.sandbox import make_apns_key

        key_file = tmp_path / "other.p8"
        key_file.write_text(make_apns_key())
        overrides["apns_private_key_file"] = key_file
        wrong = [key_file.read_text()]
    elif spec.name == "fcm":
        wrong = [_foreign_service_account(sandbox, tmp_path, overrides)]
    else:
        wrong = [str(v) for v in overrides.values()]
    async with adapter(make_settings(**overrides), spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    assert outcome.kind is OutcomeKind.CONFIG, outcome
    assert_no_secrets(outcome, [*sandbox_secrets, *wrong], debug_logs.text)


def _foreign_service_account(sandbox: Sandbox, tmp_path, overrides: dict) -> str:
    """A service account file like the sandbox's, signed by a key the sandbox does not know."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    info = json.loads(sandbox.credentials.fcm_service_account_file.read_text())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "foreign-service-account.json"
    path.write_text(json.dumps(info))
    overrides["fcm_credentials_file"] = path
    return info["private_key"]


@by_name
async def test_unknown_when_no_answer_before_the_timeout(
    spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs
):
    sandbox.client.set_faults({"providers": {spec.name: {"always": "timeout"}}})
    settings = make_settings(provider_timeout_seconds=0.5)
    async with adapter(settings, spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    assert outcome.kind is OutcomeKind.UNKNOWN, outcome
    # The request did reach the provider: that is what makes the outcome unknown.
    assert [r["answer"] for r in sandbox.client.requests(spec.name)] == ["timeout"]
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)


@by_name
async def test_retry_when_the_provider_cannot_be_reached(
    spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs
):
    url = _closed_port_url("https" if spec.name == "apns" else "http")
    if spec.name == "mailchimp":
        url += "/api/1.0"
    async with adapter(make_settings(**{spec.url_setting: url}), spec.name) as provider:
        outcome = await provider.send(message_for(spec))

    assert outcome.kind is OutcomeKind.RETRY, outcome
    assert sandbox.client.requests(spec.name) == []
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)


@by_name
async def test_an_expired_message_is_permanent_and_never_sent(
    spec: Spec, sandbox: Sandbox, make_settings, sandbox_secrets, debug_logs
):
    expired = message_for(spec, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    async with adapter(make_settings(), spec.name) as provider:
        outcome = await provider.send(expired)

    assert outcome.kind is OutcomeKind.PERMANENT, outcome
    assert outcome.detail == {"error": "expired"}
    assert sandbox.client.requests(spec.name) == []
    assert_no_secrets(outcome, sandbox_secrets, debug_logs.text)
