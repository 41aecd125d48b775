"""Delivery receipts the sandbox sends back, signed the way the providers sign them.

- Twilio status callbacks: a form POST to the message's ``StatusCallback``
  URL, ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + each
  parameter name and value, sorted by name)).
- SendGrid event webhook: a JSON array POSTed to the configured URL,
  ``X-Twilio-Email-Event-Webhook-Signature`` = base64(DER ECDSA-P256-SHA256
  signature over timestamp + body), timestamp in
  ``X-Twilio-Email-Event-Webhook-Timestamp``.

The signing functions are written from the providers' documentation, not
with their SDKs, so a test that verifies them with the SDKs' validators
checks both sides.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from outbox.sandbox.recorder import Recorder

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
# At most this many receipts in flight at once, as a provider's webhook dispatcher
# would: a burst of sends (the demo's 600 emails) queues here instead of piling
# on the receiver, whose few database connections would answer the excess 503.
RECEIPT_CONNECTIONS = 8
# pool=None: waiting for one of our own connections is queueing, not the receiver
# failing. A receiver under CPU load answers late, not never; the read timeout
# leaves room for its own 5 s wait for a database connection.
RECEIPT_TIMEOUT = httpx.Timeout(5.0, read=30.0, pool=None)
# A receipt that fails (transport error, 429 or 5xx) is posted again, as the
# providers retry their webhooks: after 0.25, 0.5, 1 and 2 s, then given up.
RECEIPT_ATTEMPTS = 5
RECEIPT_BACKOFF_S = 0.25
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

_log = logging.getLogger("outbox.sandbox.receipts")


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's request signature for a form POST to ``url``."""
    payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sendgrid_signature(private_key_pem: str, timestamp: str, body: str) -> str:
    """SendGrid's signed-event-webhook signature over ``timestamp + body``."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


class ReceiptSender:
    """Sends receipts in the background of the server's event loop."""

    def __init__(self, recorder: Recorder, delay_s: float = 0.05) -> None:
        self.recorder = recorder
        self.delay_s = delay_s
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def pending(self) -> int:
        """Receipts scheduled and not yet answered (or given up)."""
        return len(self._tasks)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(
        self,
        provider: str,
        url: str,
        events: list[str],
        message_id: str | None,
        request: Callable[[], dict[str, Any]],
    ) -> None:
        """POST ``request()`` (built again for each attempt, so signed afresh) to ``url``."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=RECEIPT_TIMEOUT,
                limits=httpx.Limits(
                    max_connections=RECEIPT_CONNECTIONS,
                    max_keepalive_connections=RECEIPT_CONNECTIONS,
                ),
            )
        status: int | None = None
        error: str | None = None
        for attempt in range(1, RECEIPT_ATTEMPTS + 1):
            try:
                response = await self._client.post(url, **request())
                status, error = response.status_code, None
            except httpx.HTTPError as exc:
                status, error = None, type(exc).__name__
            if status is not None and status not in RETRY_STATUSES:
                break
            if attempt == RECEIPT_ATTEMPTS:
                _log.warning(
                    "sandbox.receipt_failed provider=%s url=%s status=%s error=%s attempts=%d",
                    provider,
                    url,
                    status,
                    error,
                    attempt,
                )
                break
            _log.info(
                "sandbox.receipt_retry provider=%s url=%s status=%s error=%s attempt=%d",
                provider,
                url,
                status,
                error,
                attempt,
            )
            await asyncio.sleep(RECEIPT_BACKOFF_S * 2 ** (attempt - 1))
        self.recorder.add_receipt(
            provider=provider,
            url=url,
            events=events,
            provider_message_id=message_id,
            status=status,
            error=error,
            attempts=attempt,
        )

    def twilio_status(
        self, url: str, auth_token: str, params: dict[str, str], statuses: list[str]
    ) -> None:
        """Schedule one signed status callback per status, in order."""

        async def run() -> None:
            for status in statuses:
                await asyncio.sleep(self.delay_s)
                form = {**params, "MessageStatus": status, "SmsStatus": status}
                headers = {TWILIO_SIGNATURE_HEADER: twilio_signature(auth_token, url, form)}
                await self._post(
                    "twilio",
                    url,
                    [status],
                    params.get("MessageSid"),
                    # The same form and signature at each attempt: Twilio signs no time.
                    functools.partial(dict, data=form, headers=headers),
                )

        self._spawn(run())

    def sendgrid_events(
        self, url: str, private_key_pem: str, events: list[dict[str, Any]], message_id: str | None
    ) -> None:
        """Schedule one signed event-webhook POST carrying ``events``."""

        body = json.dumps(events)

        def request() -> dict[str, Any]:
            # Signed at each attempt: the receiver may refuse an old timestamp.
            timestamp = str(int(time.time()))
            return {
                "content": body.encode(),
                "headers": {
                    "Content-Type": "application/json",
                    SENDGRID_SIGNATURE_HEADER: sendgrid_signature(private_key_pem, timestamp, body),
                    SENDGRID_TIMESTAMP_HEADER: timestamp,
                },
            }

        async def run() -> None:
            await asyncio.sleep(self.delay_s)
            await self._post("sendgrid", url, [e["event"] for e in events], message_id, request)

        self._spawn(run())

    async def aclose(self) -> None:
        """Cancel receipts not yet sent and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def sendgrid_event_id() -> str:
    """An ``sg_event_id``-shaped id (receivers de-duplicate on it)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
