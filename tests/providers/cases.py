"""What the provider tests share: one spec per adapter, messages, and the leak check."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from outbox.providers.base import Message, Outcome, Provider
from outbox.providers.registry import BUILDERS
from outbox.settings import Settings

APNS_TOKEN = "a1b2" * 16
FCM_TOKEN = "fcm-device-token:" + "x" * 40
PHONE = "+15551230001"
EMAIL = "someone@example.com"

_ids = itertools.count(1000)


@dataclass(frozen=True)
class Spec:
    """How the conformance suite drives one adapter."""

    name: str
    channel: str
    destination: str
    # A sandbox answer this provider gives for a message it can never send.
    permanent: str
    # Settings overrides whose credentials the sandbox refuses.
    wrong_credentials: dict[str, Any] = field(default_factory=dict)
    # Whether the provider reports a dead destination when sending (SendGrid only
    # learns it later, from a bounce on the event webhook).
    dead_at_send: bool = True
    # The setting whose URL, pointed at a closed port, makes the request never leave.
    url_setting: str = ""

    @property
    def seen_as(self) -> str:
        """The destination as the provider receives it (Vonage takes numbers without '+')."""
        return self.destination.lstrip("+") if self.name == "vonage" else self.destination

    def __str__(self) -> str:
        return self.name


SPECS = [
    Spec("apns", "push", APNS_TOKEN, "PayloadTooLarge", url_setting="apns_base_url"),
    Spec("fcm", "push", FCM_TOKEN, "INVALID_ARGUMENT", url_setting="fcm_base_url"),
    Spec(
        "twilio",
        "sms",
        PHONE,
        "21617",
        {"twilio_auth_token": "0" * 32},
        url_setting="twilio_base_url",
    ),
    Spec(
        "vonage",
        "sms",
        PHONE,
        "3",
        {"vonage_api_secret": "not-the-secret"},
        url_setting="vonage_base_url",
    ),
    Spec(
        "sendgrid",
        "email",
        EMAIL,
        "400",
        {"sendgrid_api_key": "SG.not.the-key"},
        dead_at_send=False,
        url_setting="sendgrid_base_url",
    ),
    Spec(
        "mailchimp",
        "email",
        EMAIL,
        "ValidationError",
        {"mailchimp_api_key": "md-not-the-key"},
        url_setting="mailchimp_base_url",
    ),
]


def message(channel: str, destination: str, **fields: Any) -> Message:
    """A rendered message with fresh ids."""
    n = next(_ids)
    defaults: dict[str, Any] = {
        "delivery_id": n,
        "notification_id": n + 500_000,
        "message_id": f"msg-{n}",
        "channel": channel,
        "destination": destination,
        "attempt": 1,
        "body": "Your code is 123456",
        "subject": "Your code" if channel == "email" else None,
        "title": "Sign-in" if channel == "push" else None,
    }
    defaults.update(fields)
    return Message(**defaults)


def message_for(spec: Spec, **fields: Any) -> Message:
    return message(spec.channel, spec.destination, **fields)


@contextlib.asynccontextmanager
async def adapter(settings: Settings, name: str) -> AsyncIterator[Provider]:
    """The adapter the registry builds for ``name``, closed afterwards."""
    provider = BUILDERS[name](settings)
    try:
        yield provider
    finally:
        await provider.aclose()


def assert_no_secrets(outcome: Outcome, secrets: Iterable[str], logs: str = "") -> None:
    """No secret value in the outcome's reason, its detail, or the captured logs."""
    stored = f"{outcome.reason} {outcome.detail!r} {outcome.provider_message_id}"
    for secret in secrets:
        if not secret:
            continue
        assert secret not in stored, "a secret reached the outcome"
        assert secret not in logs, "a secret reached the logs"
