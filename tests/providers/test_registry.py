"""build_providers: what the settings list is built; what is missing is named."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime

import pytest

from outbox.providers.base import Outcome, OutcomeKind, Provider
from outbox.providers.console import ConsoleProvider
from outbox.providers.registry import BUILDERS, ProviderConfigError, build_providers
from outbox.providers.transport import (
    REDACTED,
    header_retry_after,
    retry_after_seconds,
    scrub,
    seconds_left,
)
from outbox.settings import Settings
from tests.providers.cases import message


def _close(providers: dict[str, Provider]) -> None:
    async def close() -> None:
        for provider in providers.values():
            await provider.aclose()

    asyncio.run(close())


def test_builds_each_listed_provider_once(make_settings):
    providers = build_providers(
        make_settings(providers_push=["apns", "fcm", "console"], providers_email=["console"])
    )
    try:
        assert list(providers) == ["console", "twilio", "vonage", "apns", "fcm"]
        for name, provider in providers.items():
            assert isinstance(provider, Provider)
            assert provider.name == name
    finally:
        _close(providers)


def test_default_settings_build_the_console_provider():
    providers = build_providers(Settings(_env_file=None))
    assert list(providers) == ["console"]
    assert providers["console"].channel == "*"


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"providers_sms": ["twilio"]}, ["OUTBOX_PROVIDERS_SMS", "OUTBOX_TWILIO_ACCOUNT_SID"]),
        ({"providers_email": ["sendgrid"]}, ["OUTBOX_PROVIDERS_EMAIL", "OUTBOX_SENDGRID_API_KEY"]),
        (
            {"providers_email": ["mailchimp"], "mailchimp_api_key": "k"},
            ["OUTBOX_MAILCHIMP_FROM_EMAIL"],
        ),
        (
            {"providers_sms": ["vonage"], "vonage_api_key": "k", "vonage_api_secret": "s"},
            ["OUTBOX_VONAGE_FROM"],
        ),
        (
            {"providers_push": ["apns"], "apns_key_id": "K"},
            ["OUTBOX_APNS_PRIVATE_KEY or OUTBOX_APNS_PRIVATE_KEY_FILE"],
        ),
        ({"providers_push": ["fcm"]}, ["OUTBOX_FCM_CREDENTIALS_FILE"]),
        (
            {"providers_sms": ["twilio"], "twilio_account_sid": "AC1", "twilio_auth_token": "t"},
            ["OUTBOX_TWILIO_FROM_NUMBER or OUTBOX_TWILIO_MESSAGING_SERVICE_SID"],
        ),
    ],
)
def test_missing_credentials_name_the_setting(settings, names):
    with pytest.raises(ProviderConfigError) as raised:
        build_providers(Settings(_env_file=None, **settings))
    for name in names:
        assert name in str(raised.value)


def _apns_settings(private_key: str, **overrides: str) -> Settings:
    return Settings(
        _env_file=None,
        providers_push=["apns"],
        apns_key_id="K",
        apns_team_id="T",
        apns_topic="t",
        apns_private_key=private_key,
        **overrides,
    )


def test_secret_values_never_appear_in_config_errors():
    secret = "-----BEGIN PRIVATE KEY-----\nnot really a key\n-----END PRIVATE KEY-----"
    settings = _apns_settings(secret)
    with pytest.raises(ProviderConfigError, match="OUTBOX_APNS_PRIVATE_KEY") as raised:
        build_providers(settings)
    assert "not really a key" not in str(raised.value)


@pytest.mark.parametrize("field", ["apns_base_url", "apns_sandbox_base_url"])
def test_an_apns_url_must_be_https(field):
    from outbox.sandbox import make_apns_key

    settings = _apns_settings(make_apns_key(), **{field: "http://apns.internal:8443"})
    with pytest.raises(ProviderConfigError) as raised:
        build_providers(settings)
    assert str(raised.value) == (
        f"provider 'apns': OUTBOX_{field.upper()}: 'http://apns.internal:8443' must be an "
        "https:// URL (apns speaks HTTP/2 over TLS only)"
    )


def test_unknown_provider_and_wrong_channel(make_settings):
    with pytest.raises(
        ProviderConfigError, match="unknown provider 'pigeon' in OUTBOX_PROVIDERS_SMS"
    ):
        build_providers(Settings(_env_file=None, providers_sms=["pigeon"]))
    with pytest.raises(ProviderConfigError, match="'twilio' sends sms.*OUTBOX_PROVIDERS_EMAIL"):
        build_providers(
            make_settings(providers_email=["twilio"], providers_sms=[], providers_push=[])
        )


def test_every_builder_name_matches_its_provider(make_settings):
    assert {"apns", "fcm", "twilio", "vonage", "sendgrid", "mailchimp", "console"} <= set(BUILDERS)


def test_console_prints_one_line_and_is_always_sent():
    out = io.StringIO()
    console = ConsoleProvider(out)
    m = message("email", "someone@example.com", body="line one\nline two " + "x" * 100)
    outcome = asyncio.run(console.send(m))
    assert outcome.kind is OutcomeKind.SENT
    assert outcome.provider_message_id == f"console-{m.delivery_id}-1"
    [line] = out.getvalue().splitlines()
    assert "email -> someone@example.com" in line and m.message_id in line
    assert "Your code" in line  # an email shows its subject


def test_retry_after_parsing():
    now = 1_800_000_000.0
    assert retry_after_seconds("7", now) == 7
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:07 GMT", 1_799_913_600.0) is not None
    assert retry_after_seconds("soon", now) is None
    assert header_retry_after({"X-RateLimit-Reset": str(int(now) + 30)}, now) == 30
    assert header_retry_after({"Retry-After": "3", "X-RateLimit-Reset": "0"}, now) == 3
    assert header_retry_after({}, now) is None


def test_naive_expiry_is_utc():
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert seconds_left(datetime(2030, 1, 1, 12, 1), now) == 60
    assert seconds_left(None, now) is None


def test_scrub_removes_secrets_from_reason_and_detail():
    outcome = Outcome.config("bad key s3cr3t", body={"echo": ["s3cr3t", 1]}, status=401)
    clean = scrub(outcome, ["s3cr3t", ""])
    assert clean.reason == f"bad key {REDACTED}"
    assert clean.detail == {"body": {"echo": [REDACTED, 1]}, "status": 401}
    assert scrub(outcome, []) is outcome
