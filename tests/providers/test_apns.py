"""APNs: provider-token reuse and refresh, ExpiredProviderToken, endpoints, headers, size."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from outbox.providers.apns import (
    PRODUCTION_URL,
    SANDBOX_URL,
    ApnsProvider,
    ApnsTokenCache,
    load_private_key,
)
from outbox.providers.base import OutcomeKind
from outbox.sandbox import Sandbox, make_apns_key
from tests.providers.cases import APNS_TOKEN, message

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _adapter(sandbox: Sandbox, cache: ApnsTokenCache, **options) -> ApnsProvider:
    creds = sandbox.credentials
    return ApnsProvider(
        key_id=creds.apns_key_id,
        team_id=creds.apns_team_id,
        topic=creds.apns_topic,
        private_key=creds.apns_private_key,
        base_url=sandbox.apns_url,
        sandbox_base_url=sandbox.apns_sandbox_url,
        ca_file=sandbox.ca_file,
        token_cache=cache,
        **options,
    )


def test_token_is_reused_inside_the_window_and_refreshed_after_50_minutes():
    key = load_private_key(make_apns_key())
    clock = FakeClock(1_800_000_000)
    cache = ApnsTokenCache(clock)

    first = cache.get("TEAM123456", "KEY1234567", key)
    clock.now += 20 * 60
    assert cache.get("TEAM123456", "KEY1234567", key) == first
    clock.now += 29 * 60 + 59  # 49:59 old: still inside Apple's 20..60 minute window
    assert cache.get("TEAM123456", "KEY1234567", key) == first
    assert cache.minted == 1
    clock.now += 1
    second = cache.get("TEAM123456", "KEY1234567", key)
    assert second != first
    assert cache.minted == 2

    header = jwt.get_unverified_header(second)
    claims = jwt.decode(
        second, key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert header["alg"] == "ES256" and header["kid"] == "KEY1234567"
    assert claims == {"iss": "TEAM123456", "iat": int(clock.now)}


def test_token_is_per_key():
    cache = ApnsTokenCache(FakeClock(1_800_000_000))
    one, other = load_private_key(make_apns_key()), load_private_key(make_apns_key())
    assert cache.get("T", "K", one) != cache.get("T", "K", other)


def test_concurrent_rejections_share_one_replacement():
    key = load_private_key(make_apns_key())
    cache = ApnsTokenCache(FakeClock(1_800_000_000))
    rejected = cache.get("T", "K", key)
    fresh = cache.replace("T", "K", key, rejected=rejected)
    # A second send rejected with the same old token gets the same new one.
    assert cache.replace("T", "K", key, rejected=rejected) == fresh
    assert cache.minted == 2


async def test_adapters_in_one_process_share_the_token(sandbox: Sandbox):
    cache = ApnsTokenCache()
    one, two = _adapter(sandbox, cache), _adapter(sandbox, cache)
    try:
        for provider in (one, two, one):
            outcome = await provider.send(message("push", APNS_TOKEN))
            assert outcome.kind is OutcomeKind.SENT
    finally:
        await one.aclose()
        await two.aclose()
    assert cache.minted == 1


async def test_expired_provider_token_gets_a_new_token_and_one_retry(sandbox: Sandbox):
    sandbox.client.set_faults({"providers": {"apns": {"script": ["ExpiredProviderToken"]}}})
    cache = ApnsTokenCache()
    provider = _adapter(sandbox, cache)
    try:
        outcome = await provider.send(message("push", APNS_TOKEN))
    finally:
        await provider.aclose()

    assert outcome.kind is OutcomeKind.SENT
    assert [r["answer"] for r in sandbox.client.requests("apns")] == ["ExpiredProviderToken", "ok"]
    assert cache.minted == 2


async def test_a_token_apple_keeps_calling_expired_is_config_after_one_retry(sandbox: Sandbox):
    # A clock two hours slow: every token it mints is already older than Apple's hour.
    cache = ApnsTokenCache(clock=lambda: time.time() - 2 * 3600)
    provider = _adapter(sandbox, cache)
    try:
        outcome = await provider.send(message("push", APNS_TOKEN))
    finally:
        await provider.aclose()

    assert outcome.kind is OutcomeKind.CONFIG
    assert "clock" in outcome.reason
    answers = [r["answer"] for r in sandbox.client.requests("apns")]
    assert answers == ["ExpiredProviderToken", "ExpiredProviderToken"]


async def test_each_device_goes_to_its_own_environment(sandbox: Sandbox):
    provider = _adapter(sandbox, ApnsTokenCache())
    try:
        for environment in ("sandbox", "production", None):
            outcome = await provider.send(
                message("push", APNS_TOKEN, device_environment=environment)
            )
            assert outcome.kind is OutcomeKind.SENT
    finally:
        await provider.aclose()

    environments = [r["environment"] for r in sandbox.client.requests("apns")]
    assert environments == ["sandbox", "production", "production"]


def test_default_hosts_are_apples_per_environment():
    creds = dict(key_id="K", team_id="T", topic="com.example", private_key=make_apns_key())
    apple = ApnsProvider(**creds)
    assert apple.url_for(message("push", "ab", device_environment="sandbox")).startswith(
        SANDBOX_URL + "/3/device/"
    )
    assert apple.url_for(message("push", "ab", device_environment="production")).startswith(
        PRODUCTION_URL + "/3/device/"
    )
    # One override and no sandbox override: both environments go to the override.
    local = ApnsProvider(**creds, base_url="https://127.0.0.1:1")
    assert local.url_for(message("push", "ab", device_environment="sandbox")).startswith(
        "https://127.0.0.1:1/3/device/"
    )


async def test_headers_follow_the_message(sandbox: Sandbox):
    expires = datetime.now(UTC) + timedelta(hours=1)
    provider = _adapter(sandbox, ApnsTokenCache())
    try:
        urgent = message("push", APNS_TOKEN, priority=1, expires_at=expires, data={"order": 42})
        silent = message("push", APNS_TOKEN, title=None, body="")
        for m in (urgent, silent):
            assert (await provider.send(m)).kind is OutcomeKind.SENT
    finally:
        await provider.aclose()

    first, second = sandbox.client.requests("apns")
    assert first["fields"]["http_version"] == "2"
    assert first["fields"]["topic"] == sandbox.credentials.apns_topic
    assert first["fields"]["priority"] == "10"
    assert first["fields"]["push_type"] == "alert"
    assert first["fields"]["expiration"] == str(int(expires.timestamp()))
    assert first["ids"]["collapse_id"] == str(urgent.notification_id)
    assert first["fields"]["payload"] == {
        "aps": {"alert": {"title": "Sign-in", "body": "Your code is 123456"}, "sound": "default"},
        "order": 42,
    }
    # No title or body: a background push, which Apple requires at priority 5.
    assert second["fields"]["push_type"] == "background"
    assert second["fields"]["priority"] == "5"
    assert second["fields"]["expiration"] is None
    assert second["fields"]["payload"] == {"aps": {"content-available": 1}}


async def test_payload_too_large_is_permanent_and_never_sent(sandbox: Sandbox):
    provider = _adapter(sandbox, ApnsTokenCache())
    try:
        outcome = await provider.send(message("push", APNS_TOKEN, body="x" * 4100))
    finally:
        await provider.aclose()

    assert outcome.kind is OutcomeKind.PERMANENT
    assert "4096" in outcome.reason
    assert sandbox.client.requests("apns") == []


async def test_expired_message_is_not_sent_late(sandbox: Sandbox):
    provider = _adapter(sandbox, ApnsTokenCache())
    try:
        past = datetime.now(UTC) - timedelta(seconds=1)
        outcome = await provider.send(message("push", APNS_TOKEN, expires_at=past))
    finally:
        await provider.aclose()

    assert outcome.kind is OutcomeKind.PERMANENT
    assert sandbox.client.requests("apns") == []


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("BadDeviceToken", OutcomeKind.DEAD_DESTINATION),
        ("DeviceTokenNotForTopic", OutcomeKind.DEAD_DESTINATION),
        ("ExpiredToken", OutcomeKind.DEAD_DESTINATION),
        ("BadCollapseId", OutcomeKind.PERMANENT),
        ("TopicDisallowed", OutcomeKind.CONFIG),
        ("InvalidProviderToken", OutcomeKind.CONFIG),
        ("TooManyProviderTokenUpdates", OutcomeKind.CONFIG),
        ("InternalServerError", OutcomeKind.RETRY),
        ("ServiceUnavailable", OutcomeKind.RETRY),
    ],
)
async def test_reason_mapping(sandbox: Sandbox, answer: str, kind: OutcomeKind):
    sandbox.client.set_faults({"providers": {"apns": {"script": [answer]}}})
    provider = _adapter(sandbox, ApnsTokenCache())
    try:
        outcome = await provider.send(message("push", APNS_TOKEN))
    finally:
        await provider.aclose()
    assert outcome.kind is kind
    assert outcome.detail["error"] == answer
