"""The webhooks service's configuration: built once from Settings, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sendgrid.helpers.eventwebhook import EventWebhook

# Defined in outbox.errors (the whole error tree in one place), re-exported here.
from outbox.errors import WebhookConfigError

if TYPE_CHECKING:
    from outbox.settings import Settings

SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")


@dataclass(frozen=True)
class WebhookConfig:
    """What the receipt endpoints need. Secrets are kept out of ``repr``."""

    # Public base URL the providers call (https://hooks.example.com); Twilio and
    # Mandrill sign the exact URL, so without it their endpoints stay off.
    public_url: str | None = None
    max_body_bytes: int = 5 * 1024 * 1024
    timestamp_tolerance_s: float = 300.0
    # How long a terminal receipt that beat the worker's "sent" record is retried,
    # and how often.
    late_receipt_s: float = 120.0
    late_retry_interval_s: float = 1.0
    # At most this many late receipts are held in memory; past it the oldest go.
    late_receipt_limit: int = 10_000
    twilio_auth_token: str | None = field(default=None, repr=False)
    sendgrid_public_key: str | None = None  # a public key: not a secret
    vonage_signature_secret: str | None = field(default=None, repr=False)
    vonage_signature_method: str = "md5hash"
    mailchimp_webhook_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.public_url is not None:
            url = self.public_url.strip().rstrip("/")
            if not url.startswith(("https://", "http://")):
                raise WebhookConfigError(
                    f"OUTBOX_WEBHOOKS_PUBLIC_URL must be an http(s) URL, got {self.public_url!r}"
                )
            if "?" in url or "#" in url:
                raise WebhookConfigError(
                    "OUTBOX_WEBHOOKS_PUBLIC_URL must be a base URL without query or fragment"
                )
            object.__setattr__(self, "public_url", url)
        if self.max_body_bytes < 1:
            raise WebhookConfigError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.timestamp_tolerance_s <= 0:
            raise WebhookConfigError(
                f"timestamp tolerance must be positive, got {self.timestamp_tolerance_s}"
            )
        if self.vonage_signature_method not in SIGNATURE_METHODS:
            raise WebhookConfigError(
                f"OUTBOX_VONAGE_SIGNATURE_METHOD must be one of {', '.join(SIGNATURE_METHODS)}, "
                f"got {self.vonage_signature_method!r}"
            )
        if self.sendgrid_public_key:
            try:
                # Parsed once here, so a bad key fails at start-up, not per request.
                EventWebhook(self.sendgrid_public_key.strip())
            except ValueError:
                raise WebhookConfigError(
                    "OUTBOX_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 public key as SendGrid "
                    "shows it (Settings > Mail Settings > Signed Event Webhook)"
                ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        """The configuration the ``OUTBOX_*`` settings describe."""

        def secret(value: object) -> str | None:
            plain = value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]
            return plain or None

        return cls(
            public_url=settings.webhooks_public_url or None,
            max_body_bytes=settings.webhooks_max_body_bytes,
            timestamp_tolerance_s=settings.webhooks_timestamp_tolerance_seconds,
            late_receipt_s=settings.webhooks_late_receipt_seconds,
            twilio_auth_token=secret(settings.twilio_auth_token),
            sendgrid_public_key=settings.sendgrid_webhook_public_key or None,
            vonage_signature_secret=secret(settings.vonage_signature_secret),
            vonage_signature_method=settings.vonage_signature_method,
            mailchimp_webhook_key=secret(settings.mailchimp_webhook_key),
        )

    def missing(self, provider: str) -> str | None:
        """The setting(s) a provider's endpoint lacks, or None when it can verify requests."""
        needs = {
            "twilio": [
                ("webhooks_public_url", self.public_url),
                ("twilio_auth_token", self.twilio_auth_token),
            ],
            "sendgrid": [("sendgrid_webhook_public_key", self.sendgrid_public_key)],
            "vonage": [("vonage_signature_secret", self.vonage_signature_secret)],
            "mailchimp": [
                ("webhooks_public_url", self.public_url),
                ("mailchimp_webhook_key", self.mailchimp_webhook_key),
            ],
        }[provider]
        absent = [f"OUTBOX_{name.upper()}" for name, value in needs if not value]
        return " and ".join(absent) or None
