"""Build the provider adapters the settings ask for.

``settings.providers_email`` / ``_sms`` / ``_push`` list provider names per
channel. :func:`build_providers` builds each listed provider once, from its
settings, and fails at start-up, naming the setting, when one is missing:
better than a worker discovering it on its first send.

To add a provider, add one entry to :data:`BUILDERS`: a name and a function
``(Settings) -> Provider``. An adapter that pools connections keeps up to
``settings.worker_concurrency`` of them: one per send in flight, so no send
waits for a connection, and none kept idle beyond that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

# Defined in outbox.errors (the whole error tree in one place), re-exported here.
from outbox.errors import ProviderConfigError
from outbox.providers.base import Provider
from outbox.settings import CHANNELS, Settings


class _Need:
    """Reads a provider's settings, raising ProviderConfigError for a missing one."""

    def __init__(self, settings: Settings, provider: str) -> None:
        self.settings = settings
        self.provider = provider

    def _listed_in(self) -> str:
        lists = [
            f"OUTBOX_PROVIDERS_{channel.upper()}"
            for channel in CHANNELS
            if self.provider in getattr(self.settings, f"providers_{channel}")
        ]
        return " and ".join(lists) or "the settings"

    def missing(self, *fields: str) -> ProviderConfigError:
        names = " or ".join(f"OUTBOX_{f.upper()}" for f in fields)
        return ProviderConfigError(
            f"provider {self.provider!r} is listed in {self._listed_in()} but {names} is not set"
        )

    def __call__(self, field: str) -> str:
        value = getattr(self.settings, field)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or value == "":
            raise self.missing(field)
        return str(value)

    def optional(self, field: str) -> str | None:
        value = getattr(self.settings, field)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return str(value) if value not in (None, "") else None

    def invalid(self, field: str, why: str) -> ProviderConfigError:
        return ProviderConfigError(f"provider {self.provider!r}: OUTBOX_{field.upper()}: {why}")

    def urls(self) -> None:
        """Refuse a malformed ``<provider>_*_url`` setting now, naming it, not at the first send."""
        for field in type(self.settings).model_fields:
            if not (field.startswith(f"{self.provider}_") and field.endswith("_url")):
                continue
            value = self.optional(field)
            if value is not None and not _is_http_url(value):
                raise self.invalid(
                    field, f"{_shown_url(value)!r} is not an http(s) URL (like https://host:port)"
                )
            if value is not None and self.provider in _TLS_ONLY and not value.startswith("https:"):
                raise self.invalid(
                    field,
                    f"{_shown_url(value)!r} must be an https:// URL "
                    f"({self.provider} speaks HTTP/2 over TLS only)",
                )


# Providers whose API is HTTP/2 over TLS and nothing else.
_TLS_ONLY = frozenset({"apns"})


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(c.isspace() for c in value)
    )


def _shown_url(value: str) -> str:
    # A URL may carry credentials (https://user:token@host): never echo that part.
    scheme, sep, rest = value.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://**********@{rest.split('@', 1)[1]}"
    return value


def _apns(settings: Settings) -> Provider:
    from outbox.providers.apns import ApnsProvider, read_private_key_file

    need = _Need(settings, "apns")
    key = need.optional("apns_private_key")
    if key is None:
        if settings.apns_private_key_file is None:
            raise need.missing("apns_private_key", "apns_private_key_file")
        try:
            key = read_private_key_file(settings.apns_private_key_file)
        except OSError as exc:
            raise need.invalid(
                "apns_private_key_file", f"cannot read it ({exc.strerror})"
            ) from None
    try:
        return ApnsProvider(
            key_id=need("apns_key_id"),
            team_id=need("apns_team_id"),
            topic=need("apns_topic"),
            private_key=key,
            base_url=settings.apns_base_url,
            sandbox_base_url=settings.apns_sandbox_base_url,
            ca_file=settings.apns_ca_file,
            timeout=settings.provider_timeout_seconds,
            connections=settings.worker_concurrency,
        )
    except ValueError as exc:
        if isinstance(exc, ProviderConfigError):
            raise
        raise need.invalid("apns_private_key", str(exc)) from None


def _fcm_project(need: _Need, credentials_file: Path) -> str:
    project = need.optional("fcm_project_id")
    if project:
        return project
    try:
        project = json.loads(credentials_file.read_text(encoding="utf-8")).get("project_id")
    except (OSError, ValueError, AttributeError):
        project = None
    if not project:
        raise need.missing("fcm_project_id")
    return str(project)


def _fcm(settings: Settings) -> Provider:
    from outbox.providers.fcm import FcmProvider

    need = _Need(settings, "fcm")
    credentials_file = Path(need("fcm_credentials_file"))
    project = _fcm_project(need, credentials_file)
    try:
        return FcmProvider(
            project_id=project,
            credentials_file=credentials_file,
            base_url=settings.fcm_base_url,
            timeout=settings.provider_timeout_seconds,
            connections=settings.worker_concurrency,
        )
    except (OSError, ValueError) as exc:
        raise need.invalid(
            "fcm_credentials_file", f"not a usable service account file ({type(exc).__name__})"
        ) from None


def _twilio(settings: Settings) -> Provider:
    from outbox.providers.twilio import TwilioProvider

    need = _Need(settings, "twilio")
    account_sid, auth_token = need("twilio_account_sid"), need("twilio_auth_token")
    from_number = need.optional("twilio_from_number")
    service_sid = need.optional("twilio_messaging_service_sid")
    if not (from_number or service_sid):
        raise need.missing("twilio_from_number", "twilio_messaging_service_sid")
    return TwilioProvider(
        account_sid=account_sid,
        auth_token=auth_token,
        from_number=from_number,
        messaging_service_sid=service_sid,
        status_callback_url=settings.twilio_status_callback_url,
        base_url=settings.twilio_base_url,
        timeout=settings.provider_timeout_seconds,
        connections=settings.worker_concurrency,
    )


def _vonage(settings: Settings) -> Provider:
    from outbox.providers.vonage import VonageProvider

    need = _Need(settings, "vonage")
    return VonageProvider(
        api_key=need("vonage_api_key"),
        api_secret=need("vonage_api_secret"),
        sender=need("vonage_from"),
        base_url=settings.vonage_base_url,
        timeout=settings.provider_timeout_seconds,
        connections=settings.worker_concurrency,
    )


def _sendgrid(settings: Settings) -> Provider:
    from outbox.providers.sendgrid import SendGridProvider

    need = _Need(settings, "sendgrid")
    return SendGridProvider(
        api_key=need("sendgrid_api_key"),
        from_email=need("sendgrid_from_email"),
        base_url=settings.sendgrid_base_url,
        timeout=settings.provider_timeout_seconds,
        connections=settings.worker_concurrency,
    )


def _mailchimp(settings: Settings) -> Provider:
    from outbox.providers.mailchimp import MailchimpProvider

    need = _Need(settings, "mailchimp")
    return MailchimpProvider(
        api_key=need("mailchimp_api_key"),
        from_email=need("mailchimp_from_email"),
        base_url=settings.mailchimp_base_url,
        timeout=settings.provider_timeout_seconds,
        connections=settings.worker_concurrency,
    )


def _console(settings: Settings) -> Provider:
    from outbox.providers.console import ConsoleProvider

    return ConsoleProvider()


def _noop(settings: Settings) -> Provider:
    from outbox.providers.testing import NoopProvider

    return NoopProvider(delay_seconds=settings.local_provider_delay_seconds)


def _record(settings: Settings) -> Provider:
    from outbox.providers.testing import RecordingProvider

    need = _Need(settings, "record")
    return RecordingProvider(
        Path(need("record_file")), delay_seconds=settings.local_provider_delay_seconds
    )


# Name -> builder. Adapters are imported inside their builder so that a
# process using only email never imports firebase-admin.
BUILDERS: dict[str, Callable[[Settings], Provider]] = {
    "apns": _apns,
    "fcm": _fcm,
    "twilio": _twilio,
    "vonage": _vonage,
    "sendgrid": _sendgrid,
    "mailchimp": _mailchimp,
    "console": _console,
    "noop": _noop,
    "record": _record,
}


def listed_providers(settings: Settings) -> dict[str, list[str]]:
    """Each listed provider name and the channels it is listed under, in order of listing."""
    listed: dict[str, list[str]] = {}
    for channel in CHANNELS:
        for name in getattr(settings, f"providers_{channel}"):
            listed.setdefault(name, []).append(channel)
    return listed


def build_providers(settings: Settings, *, connections: int | None = None) -> dict[str, Provider]:
    """Build every provider listed in ``settings.providers_*``, keyed by name.

    ``connections``: the most HTTP connections each adapter keeps to its
    provider (default ``settings.worker_concurrency``); the worker passes its
    own concurrency, which its command line may have changed.

    Raises ProviderConfigError, naming the setting, when a listed provider is
    unknown, lacks a credential, or is listed under a channel it cannot serve.
    """
    if connections is not None:
        settings = settings.model_copy(update={"worker_concurrency": connections})
    built: dict[str, Provider] = {}
    for name, channels in listed_providers(settings).items():
        builder = BUILDERS.get(name)
        if builder is None:
            lists = ", ".join(f"OUTBOX_PROVIDERS_{c.upper()}" for c in channels)
            raise ProviderConfigError(
                f"unknown provider {name!r} in {lists}; known: {', '.join(sorted(BUILDERS))}"
            )
        _Need(settings, name).urls()
        provider = builder(settings)
        wrong = [c for c in channels if provider.channel not in (c, "*")]
        if wrong:
            raise ProviderConfigError(
                f"provider {name!r} sends {provider.channel}, but it is listed in "
                f"OUTBOX_PROVIDERS_{wrong[0].upper()}"
            )
        built[name] = provider
    return built
