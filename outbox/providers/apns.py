"""Apple Push Notification service: HTTP/2 (``providers.h2pool``), token (JWT) authentication.

One request per delivery: ``POST /3/device/<token>`` on Apple's production or
sandbox host, chosen per device from ``Message.device_environment`` (a token
from a development build only works on the sandbox host, and Apple answers
BadDeviceToken on the other one).

Decisions worth knowing:

- ``apns-expiration`` is sent only when the notification has ``expires_at``.
  Without it Apple stores the push and retries delivery while the device is
  offline, which is what a transactional message (a login code, an order
  update) wants; ``0`` would mean "deliver now or drop", losing the message to
  a phone that is briefly out of coverage.
- ``apns-collapse-id`` is our notification id, so a duplicate send (after an
  in-doubt outcome) replaces the first notification on the device.
- A push with neither title nor body is sent as a background push
  (``content-available``, priority 5, as Apple requires for that type).
- BadTopic / MissingTopic / TopicDisallowed are ``config``: they are about
  our apns_topic setting and would fail every message alike.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from outbox.providers.base import Message, Outcome
from outbox.providers.h2pool import Http2Adapter
from outbox.providers.transport import (
    DEFAULT_CONNECTIONS,
    TRANSPORT_ERRORS,
    Answer,
    header_retry_after,
    transport_outcome,
)

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
MAX_PAYLOAD_BYTES = 4096

# Apple: refresh the provider token no more often than every 20 minutes and at
# least every 60. We refresh at 50: well inside both bounds, with 10 minutes of
# slack for clock skew between us and Apple.
TOKEN_REFRESH_AFTER_SECONDS = 50 * 60

_DEAD_REASONS = {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
_CONFIG_REASONS = {
    "InvalidProviderToken",
    "MissingProviderToken",
    "Forbidden",
    "TooManyProviderTokenUpdates",
    "BadTopic",
    "MissingTopic",
    "TopicDisallowed",
    "BadCertificate",
    "BadCertificateEnvironment",
    "BadPath",
    "BadMethod",
}


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    issued_at: float


def _slot(team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey) -> tuple[str, str, int]:
    # The key itself is part of the slot: a token signed with another key under
    # the same ids (a misconfiguration, or a test) must not be handed out.
    return team_id, key_id, key.public_key().public_numbers().x


class ApnsTokenCache:
    """Provider tokens, one per (team id, key id, key), shared by every adapter in the process.

    Apple rejects a team that mints tokens too often (TooManyProviderTokenUpdates),
    so the token is process state rather than adapter state. ``clock`` returns
    epoch seconds and is injectable so tests can walk through the refresh window.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, int], _Token] = {}
        # How many tokens were signed: lets tests (and metrics) see reuse.
        self.minted = 0

    def get(self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey) -> str:
        """The current token, minted anew once the cached one is 50 minutes old."""
        now = self.clock()
        with self._lock:
            token = self._tokens.get(_slot(team_id, key_id, key))
            if token is None or now - token.issued_at >= TOKEN_REFRESH_AFTER_SECONDS:
                token = self._mint(team_id, key_id, key, now)
            return token.value

    def replace(
        self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey, rejected: str
    ) -> str:
        """A new token after Apple answered ExpiredProviderToken for ``rejected``.

        Concurrent sends that were rejected with the same token share one
        replacement instead of each minting their own.
        """
        with self._lock:
            token = self._tokens.get(_slot(team_id, key_id, key))
            if token is not None and token.value != rejected:
                return token.value
            return self._mint(team_id, key_id, key, self.clock()).value

    def _mint(
        self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey, now: float
    ) -> _Token:
        value = jwt.encode(
            {"iss": team_id, "iat": int(now)}, key, algorithm="ES256", headers={"kid": key_id}
        )
        token = _Token(value, now)
        self._tokens[_slot(team_id, key_id, key)] = token
        self.minted += 1
        return token


PROCESS_TOKEN_CACHE = ApnsTokenCache()


def load_private_key(pem: str | bytes) -> ec.EllipticCurvePrivateKey:
    """The EC (P-256) key of a .p8 file; ValueError without echoing the key text."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("the APNs private key is not a PEM (.p8) private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the APNs private key is not an EC key (a .p8 token key is P-256)")
    return key


def read_private_key_file(path: Path) -> str:
    """The PEM text of a .p8 file."""
    return Path(path).read_text(encoding="utf-8")


class ApnsProvider(Http2Adapter):
    """Sends push notifications to iOS devices through APNs."""

    name = "apns"
    channel = "push"

    def __init__(
        self,
        *,
        key_id: str,
        team_id: str,
        topic: str,
        private_key: str,
        base_url: str | None = None,
        sandbox_base_url: str | None = None,
        ca_file: Path | str | None = None,
        timeout: float = 10.0,
        token_cache: ApnsTokenCache | None = None,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self._key_id = key_id
        self._team_id = team_id
        self._topic = topic
        self._key = load_private_key(private_key)
        # No base URL on the client: each request picks the production or sandbox host.
        super().__init__(
            secrets=(private_key,),
            timeout=timeout,
            connections=connections,
            ca_file=ca_file,
        )
        self._production_url = (base_url or PRODUCTION_URL).rstrip("/")
        self._sandbox_url = (sandbox_base_url or base_url or SANDBOX_URL).rstrip("/")
        self._tokens = token_cache or PROCESS_TOKEN_CACHE

    def url_for(self, message: Message) -> str:
        """The request URL: production or sandbox host, per the device's environment."""
        base = (
            self._sandbox_url if message.device_environment == "sandbox" else self._production_url
        )
        return f"{base}/3/device/{quote(message.destination, safe='')}"

    async def _send(self, message: Message, left: float | None) -> Outcome:
        body = json.dumps(_payload(message), separators=(",", ":"), ensure_ascii=False).encode()
        if len(body) > MAX_PAYLOAD_BYTES:
            return Outcome.permanent(
                f"payload is {len(body)} bytes; APNs accepts at most {MAX_PAYLOAD_BYTES}",
                error="PayloadTooLarge",
                size=len(body),
            )
        headers = self._headers(message)
        url = self.url_for(message)
        token = self._tokens.get(self._team_id, self._key_id, self._key)
        outcome, reason = await self._post(url, headers, body, token)
        if reason == "ExpiredProviderToken":
            # Apple says the token is older than an hour (or our clock is off):
            # mint a new one and try exactly once more.
            token = self._tokens.replace(self._team_id, self._key_id, self._key, rejected=token)
            outcome, reason = await self._post(url, headers, body, token)
            if reason == "ExpiredProviderToken":
                return Outcome.config(
                    "APNs rejected a freshly minted provider token as expired; "
                    "check this host's clock",
                    status=403,
                    error=reason,
                )
        return outcome

    def _headers(self, message: Message) -> dict[str, str]:
        background = not (message.title or message.body)
        headers = {
            "apns-topic": self._topic,
            "apns-push-type": "background" if background else "alert",
            "apns-priority": "10" if message.priority > 0 and not background else "5",
            "apns-collapse-id": message.collapse_id,
            # Deterministic, so the sandbox's records and Apple's echo tie back to the attempt.
            "apns-id": str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"outbox:{message.delivery_id}:{message.attempt}")
            ),
        }
        if message.expires_at is not None:
            headers["apns-expiration"] = str(int(message.expires_at.timestamp()))
        return headers

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes, token: str
    ) -> tuple[Outcome, str | None]:
        try:
            answer = await self._http.request(
                "POST", url, {**headers, "authorization": f"bearer {token}"}, body
            )
        except TRANSPORT_ERRORS as exc:
            return transport_outcome(exc), None
        return _classify(answer)


def _payload(message: Message) -> dict:
    """The JSON body: ``aps`` plus the notification's data as custom keys."""
    if message.title or message.body:
        alert: dict[str, str] = {"body": message.body}
        if message.title:
            alert["title"] = message.title
        aps: dict = {"alert": alert, "sound": "default"}
    else:
        aps = {"content-available": 1}
    # Custom keys sit beside "aps"; a data key named "aps" must not replace ours.
    custom = {k: v for k, v in message.data.items() if k != "aps"}
    return {"aps": aps, **custom}


def _classify(response: Answer) -> tuple[Outcome, str | None]:
    status = response.status
    if status == 200:
        sent: dict[str, Any] = {"status": 200}
        if "apns-unique-id" in response.headers:  # only Apple's sandbox environment sends it
            sent["apns_unique_id"] = response.headers["apns-unique-id"]
        return Outcome.sent(response.headers.get("apns-id"), **sent), None
    try:
        reason = str(response.json().get("reason") or "")
    except (ValueError, AttributeError):
        reason = ""
    detail: dict[str, Any] = {"status": status, "error": reason or None}
    text = f"APNs {status} {reason}".strip()
    if reason == "ExpiredProviderToken":
        return Outcome.config(text, **detail), reason
    if status == 410 or reason in _DEAD_REASONS:
        return Outcome.dead_destination(text, **detail), reason
    if reason in _CONFIG_REASONS or status == 403:
        return Outcome.config(text, **detail), reason
    if status == 429 or status >= 500:
        return Outcome.retry(text, header_retry_after(response.headers), **detail), reason
    return Outcome.permanent(text, **detail), reason
