"""What the adapters share: rate-limit headers, transport failures, time-to-live, secrets.

Every adapter ends in the same few questions, answered once here:

- *How long did the provider ask us to wait?* ``Retry-After`` (seconds or an
  HTTP date) and ``X-RateLimit-Reset`` (epoch seconds) become seconds from now.
- *Did the request leave?* A failure before the request was written (refused
  connection, connect timeout, no free connection) is a plain ``retry``: the
  provider never saw it. A failure after (read timeout, connection dropped
  mid-response) is ``unknown``: the provider may have accepted it, and a retry
  may duplicate. The same question for both HTTP clients we use: aiohttp
  (HTTP/1.1 APIs) and our own HTTP/2 pool (APNs, ``outbox.providers.h2pool``),
  which raises :class:`NotSent` and :class:`Interrupted` to say which.
- *How long may the message still live?* ``expires_at`` becomes the provider's
  TTL; a message whose time is up is ``permanent`` rather than sent late.
- *Is there a secret in this text?* Reasons are stored in the database, so
  every outcome passes through :func:`scrub` before an adapter returns it.

:class:`Adapter` asks the last two for every adapter, so an adapter holds only
what differs: its request, its client and its classification. It is a
convenience for writing adapters, not part of the seam: the worker knows only
the :class:`~outbox.providers.base.Provider` protocol.

Why two HTTP clients: per request on these 2-core machines, httpx costs
1.6-4.7 ms of CPU over HTTP/1.1 with 1-50 requests in flight (its pool walks
every connection, twice over, each time a request starts or ends), aiohttp
0.4-0.6 ms (``benchmarks/provider_clients.py``). aiohttp does not speak
HTTP/2, which APNs requires, and httpx's HTTP/2 costs 2.2-2.7 ms per request;
``outbox.providers.h2pool`` drives h2 directly for about 0.7 ms.
"""

from __future__ import annotations

import abc
import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx

from outbox.providers.base import Message, Outcome
from outbox.schedule import past_expiry

REDACTED = "[redacted]"
# Connections an adapter keeps to its provider unless told: the worker's default
# concurrency (the worker passes its own), so no send waits for a connection.
DEFAULT_CONNECTIONS = 50
# Provider error texts can be long (HTML error pages); a reason is a summary.
REASON_LIMIT_CHARS = 300


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def reset_at_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from an epoch-seconds reset header (``X-RateLimit-Reset``)."""
    if not value:
        return None
    try:
        reset = float(value.strip())
    except ValueError:
        return None
    now = time.time() if now is None else now
    return max(0.0, reset - now)


def header_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The wait a response asks for: ``Retry-After`` first, then ``X-RateLimit-Reset``."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    wait = retry_after_seconds(lowered.get("retry-after"), now)
    if wait is None:
        wait = reset_at_seconds(lowered.get("x-ratelimit-reset"), now)
    return wait


class NotSent(Exception):
    """The request never reached the provider: a retry cannot duplicate it."""


class Interrupted(Exception):
    """The request was written but no whole answer came: the provider may have it."""


class BadURL(ValueError):
    """A provider URL the client cannot send to (a configuration mistake)."""


# Raised before a single byte of the request reached the provider. aiohttp's
# ConnectionTimeoutError covers both the connect and the wait for a free connection.
_NOT_SENT = (
    NotSent,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)
_BAD_URL = (BadURL, httpx.UnsupportedProtocol, httpx.InvalidURL, aiohttp.InvalidURL)
# What the adapters catch around a request: every failure of every client.
TRANSPORT_ERRORS = (
    NotSent,
    Interrupted,
    BadURL,
    httpx.HTTPError,
    aiohttp.ClientError,
    TimeoutError,
)


def transport_outcome(exc: Exception) -> Outcome:
    """Classify a client's failure by whether the request may have reached the provider."""
    kind = type(exc).__name__
    if isinstance(exc, _BAD_URL):
        return Outcome.config(f"bad provider URL ({kind})", error=kind)
    if isinstance(exc, _NOT_SENT):
        return Outcome.retry(f"could not reach the provider ({kind})", error=kind)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Outcome.unknown(f"no answer before the timeout ({kind})", error=kind)
    return Outcome.unknown(f"connection failed after the request was sent ({kind})", error=kind)


def _aware(expires_at: datetime | None) -> datetime | None:
    # Timestamps from PostgreSQL are aware; a naive one is taken as UTC, not local time.
    if expires_at is not None and expires_at.tzinfo is None:
        return expires_at.replace(tzinfo=UTC)
    return expires_at


def seconds_left(expires_at: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds until ``expires_at`` (None when it never expires; may be <= 0)."""
    expires_at = _aware(expires_at)
    if expires_at is None:
        return None
    now = now or datetime.now(UTC)
    return (expires_at - now).total_seconds()


def expired_outcome(expires_at: datetime) -> Outcome:
    """The outcome for a message whose expiry passed before it could be sent."""
    return Outcome.permanent(
        f"expired at {expires_at.isoformat()} before it was sent", error="expired"
    )


def short(text: Any, limit: int = REASON_LIMIT_CHARS) -> str:
    """A provider's text cut down to something that fits in a reason."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, secrets) for v in value)
    return value


def scrub(outcome: Outcome, secrets: Iterable[str]) -> Outcome:
    """The outcome with secret values removed from its reason and detail.

    Adapters build reasons from provider answers, which we do not control;
    this is the last gate before the text is stored.
    """
    found = tuple(s for s in secrets if s)
    if not found:
        return outcome
    return replace(
        outcome,
        reason=redact(outcome.reason, found) if outcome.reason else outcome.reason,
        detail=_redact_value(outcome.detail, found),
    )


class Adapter(abc.ABC):
    """The skeleton every adapter repeated: the expiry gate, the scrub, ``aclose``.

    A subclass sets ``name`` and ``channel``, keeps its credentials in
    ``_secrets``, and writes :meth:`_send`, which is only called for a message
    that still has time to live and whose outcome is always scrubbed: an
    adapter cannot forget either. It overrides :meth:`aclose` when it holds
    something to close, and :meth:`secrets` when its secrets change as it runs.
    """

    name: str
    channel: str
    # Handed to the provider only with at least this long left to live
    # (seconds); never with none left, whatever the provider's smallest TTL.
    min_seconds_left: float = 0.0
    _secrets: tuple[str, ...] = ()

    async def send(self, message: Message) -> Outcome:
        """Send one message; every answer and transport failure becomes an Outcome."""
        now = datetime.now(UTC)
        left = seconds_left(message.expires_at, now)
        expires_at = message.expires_at
        if expires_at is not None and (
            past_expiry(_aware(expires_at), now)
            or (left is not None and left < self.min_seconds_left)
        ):
            # The provider's TTL would have it dropped, or it has none: do not send late.
            outcome = expired_outcome(expires_at)
        else:
            outcome = await self._send(message, left)
        return scrub(outcome, self.secrets())

    def secrets(self) -> Iterable[str]:
        """The values no outcome may contain."""
        return self._secrets

    @abc.abstractmethod
    async def _send(self, message: Message, left: float | None) -> Outcome:
        """One provider request for ``message``, ``left`` seconds (None: forever) to live."""

    async def aclose(self) -> None:
        """Nothing to close."""
        return None


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's HTTP answer, read whole: what an adapter classifies."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpPool:
    """Pooled HTTP/1.1 connections to one provider (aiohttp), up to ``connections`` open.

    The session is made at the first request, not here: an aiohttp session
    belongs to the event loop it was made in, and adapters are built before
    the worker's loop starts. ``timeout`` bounds the connect (including the
    wait for a free connection: a ``retry``, nothing was sent) and each read
    of the answer (an ``unknown``); the whole request is bounded at three
    times that, like httpx's separate connect, write and read timeouts.
    """

    def __init__(self, *, timeout: float, connections: int = DEFAULT_CONNECTIONS) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.connections = connections
        self._timeout = aiohttp.ClientTimeout(
            total=3 * timeout, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, made now if there is none (in the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.connections, limit_per_host=self.connections
            )
            # Providers' errors are answers to classify, never exceptions: no raise_for_status.
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def request(self, method: str, url: str, **options: Any) -> Answer:
        """One request, its answer read whole; raises aiohttp's errors (see transport_outcome)."""
        async with self.session.request(method, url, allow_redirects=False, **options) as r:
            return Answer(r.status, r.headers, await r.read())

    async def aclose(self) -> None:
        """Close the connections (a later request opens new ones)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpAdapter(Adapter):
    """An adapter that speaks HTTP/1.1 to its provider through one :class:`HttpPool`."""

    def __init__(
        self,
        *,
        secrets: Iterable[str],
        timeout: float,
        base_url: str = "",
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self._secrets = tuple(secrets)
        self._base_url = base_url.rstrip("/")
        self._http = HttpPool(timeout=timeout, connections=connections)

    async def _post(self, path: str, **options: Any) -> Answer:
        return await self._http.request("POST", self._base_url + path, **options)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
