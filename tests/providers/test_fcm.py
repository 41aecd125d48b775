"""FCM: the one private-API bridge into firebase-admin, the message we build, error mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import firebase_admin
import pytest
from firebase_admin import messaging

from outbox.providers.base import OutcomeKind
from outbox.providers.fcm import FcmProvider, _SdkBridge
from outbox.sandbox import Sandbox
from tests.providers.cases import FCM_TOKEN, adapter, message

pytestmark = pytest.mark.anyio


async def test_sdk_bridge_points_only_this_app_at_the_sandbox(sandbox: Sandbox, make_settings):
    """Pins the private API the adapter relies on; fails loudly when the SDK changes it."""
    assert firebase_admin.__version__.startswith("7.")
    project = sandbox.credentials.fcm_project_id
    async with adapter(make_settings(), "fcm") as provider:
        assert isinstance(provider, FcmProvider)
        service = _SdkBridge.service(provider._app)
        assert hasattr(service, "_fcm_url") and hasattr(service, "_async_client")
        assert _SdkBridge.headers(service)["X-GOOG-API-FORMAT-VERSION"] == "2"
        assert callable(service._handle_fcm_httpx_error)
        assert provider.send_url == f"{sandbox.http_url}/v1/projects/{project}/messages:send"
        # The class constant (and so any other app in the process) still points at Google.
        assert messaging._MessagingService.FCM_URL.startswith("https://fcm.googleapis.com/")
        assert (await provider.send(message("push", FCM_TOKEN))).kind is OutcomeKind.SENT
    assert len(sandbox.client.requests("fcm")) == 1


async def test_without_an_override_messages_go_to_google(sandbox: Sandbox, make_settings):
    async with adapter(make_settings(fcm_base_url=None), "fcm") as provider:
        assert provider.send_url.startswith("https://fcm.googleapis.com/v1/projects/")


async def test_message_fields(sandbox: Sandbox, make_settings):
    async with adapter(make_settings(), "fcm") as provider:
        # After the adapter is built: on a loaded machine that alone can take seconds.
        expires = datetime.now(UTC) + timedelta(minutes=10)
        m = message(
            "push",
            FCM_TOKEN,
            priority=1,
            expires_at=expires,
            data={"order": 42, "kind": "receipt", "items": [1, 2]},
        )
        outcome = await provider.send(m)

    assert outcome.kind is OutcomeKind.SENT
    assert outcome.provider_message_id.startswith("projects/outbox-sandbox/messages/")
    [request] = sandbox.client.requests("fcm")
    fields = request["fields"]
    assert request["ids"] == {
        "collapse_key": str(m.notification_id),
        "apns_collapse_id": str(m.notification_id),
    }
    # FCM data values are strings; structured values travel as JSON.
    assert fields["data"] == {"order": "42", "kind": "receipt", "items": "[1, 2]"}
    assert fields["notification"] == {"title": "Sign-in", "body": "Your code is 123456"}
    assert fields["priority"] == "high"
    ttl = float(fields["ttl"].rstrip("s"))
    assert 598 <= ttl <= 600
    assert fields["apns_headers"]["apns-expiration"] == str(int(expires.timestamp()))
    assert fields["validate_only"] is False


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("UNREGISTERED", OutcomeKind.DEAD_DESTINATION),
        ("SENDER_ID_MISMATCH", OutcomeKind.DEAD_DESTINATION),
        ("INVALID_ARGUMENT", OutcomeKind.PERMANENT),
        ("THIRD_PARTY_AUTH_ERROR", OutcomeKind.CONFIG),
        ("PERMISSION_DENIED", OutcomeKind.CONFIG),
        ("QUOTA_EXCEEDED", OutcomeKind.RETRY),
    ],
)
async def test_error_mapping(sandbox: Sandbox, make_settings, answer: str, kind: OutcomeKind):
    # "always": THIRD_PARTY_AUTH_ERROR is a 401, which the SDK answers by refreshing
    # its token and trying again.
    sandbox.client.set_faults({"providers": {"fcm": {"always": answer}}})
    async with adapter(make_settings(), "fcm") as provider:
        outcome = await provider.send(message("push", FCM_TOKEN))
    assert outcome.kind is kind, outcome


async def test_unauthenticated_is_config_after_one_token_refresh(sandbox: Sandbox, make_settings):
    sandbox.client.set_faults({"providers": {"fcm": {"always": "UNAUTHENTICATED"}}})
    async with adapter(make_settings(), "fcm") as provider:
        outcome = await provider.send(message("push", FCM_TOKEN))
    assert outcome.kind is OutcomeKind.CONFIG
    # The refused token is replaced once and the request sent once more, then we give up.
    assert len(sandbox.client.requests("fcm")) == 2
    assert len(sandbox.client.requests("fcm_oauth")) == 2


async def test_a_refused_token_is_replaced_and_the_send_goes_through(
    sandbox: Sandbox, make_settings
):
    sandbox.client.set_faults({"providers": {"fcm": {"script": ["UNAUTHENTICATED", "ok"]}}})
    async with adapter(make_settings(), "fcm") as provider:
        outcome = await provider.send(message("push", FCM_TOKEN))
    assert outcome.kind is OutcomeKind.SENT
    assert [r["answer"] for r in sandbox.client.requests("fcm")] == ["UNAUTHENTICATED", "ok"]


async def test_invalid_registration_token_is_a_dead_destination(sandbox: Sandbox, make_settings):
    async with adapter(make_settings(), "fcm") as provider:
        outcome = await provider.send(message("push", "not-a-token"))
    assert outcome.kind is OutcomeKind.DEAD_DESTINATION
    assert "registration token" in outcome.reason


@pytest.mark.parametrize("answer", ["UNAVAILABLE", "INTERNAL"])
async def test_server_errors_are_retry_after_one_request(
    sandbox: Sandbox, make_settings, answer: str
):
    # No retries inside one send (the SDK's transport would make five attempts over
    # 7 s): the worker's backoff and breaker decide when to try again.
    sandbox.client.set_faults({"providers": {"fcm": {"script": [answer, "ok"]}}})
    async with adapter(make_settings(), "fcm") as provider:
        outcome = await provider.send(message("push", FCM_TOKEN))
    assert outcome.kind is OutcomeKind.RETRY, outcome
    assert outcome.detail["status"] in (500, 503)
    assert [r["answer"] for r in sandbox.client.requests("fcm")] == [answer]


async def test_payload_over_4096_bytes_is_permanent_and_never_sent(sandbox: Sandbox, make_settings):
    async with adapter(make_settings(), "fcm") as provider:
        outcome = await provider.send(message("push", FCM_TOKEN, data={"blob": "x" * 4100}))
    assert outcome.kind is OutcomeKind.PERMANENT
    assert sandbox.client.requests("fcm") == []


async def test_access_token_is_fetched_once_and_reused(sandbox: Sandbox, make_settings):
    async with adapter(make_settings(), "fcm") as provider:
        for _ in range(3):
            assert (await provider.send(message("push", FCM_TOKEN))).kind is OutcomeKind.SENT
    [grant] = sandbox.client.requests("fcm_oauth")
    assert grant["answer"] == "ok"
    assert grant["destination"] == sandbox.credentials.fcm_client_email
