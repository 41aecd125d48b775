"""SMS through Vonage (Nexmo)'s SMS API, ``POST /sms/json``, with aiohttp.

Credentials travel in the form body, never in the URL, so no access log or
HTTP client log line carries them. ``client-ref`` is our delivery id: Vonage echoes
it on delivery receipts. Vonage answers HTTP 200 for most failures and puts a
per-part ``status`` in the body; a long text is split into parts, and the
message counts as sent only when every part was accepted.

Status codes (PROVIDERS.md, Vonage): 0 accepted; 1 throttled, 5 internal
error, 10 too many binds -> retry; 6 unrecognised number prefix, 7 number
barred -> dead destination; 4, 8, 9 and sender/whitelist problems -> config;
the rest -> permanent.
"""

from __future__ import annotations

from outbox.providers.base import Message, Outcome
from outbox.providers.transport import (
    DEFAULT_CONNECTIONS,
    TRANSPORT_ERRORS,
    Answer,
    HttpAdapter,
    header_retry_after,
    short,
    transport_outcome,
)

VONAGE_URL = "https://rest.nexmo.com"
# Vonage's ttl bounds, in milliseconds.
MIN_TTL_MS = 20_000
MAX_TTL_MS = 604_800_000

RETRY_STATUSES = {"1", "5", "10"}
DEAD_STATUSES = {"6", "7"}
CONFIG_STATUSES = {"4", "8", "9", "14", "15", "19", "20", "23", "29"}


class VonageProvider(HttpAdapter):
    """Sends SMS through Vonage's SMS API."""

    name = "vonage"
    channel = "sms"

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        sender: str,
        base_url: str | None = None,
        timeout: float = 10.0,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        super().__init__(
            secrets=(api_secret,),
            timeout=timeout,
            base_url=base_url or VONAGE_URL,
            connections=connections,
        )
        self._api_key = api_key
        self._api_secret = api_secret
        self._sender = sender

    def _form(self, message: Message, left: float | None) -> dict[str, str]:
        form = {
            "api_key": self._api_key,
            "api_secret": self._api_secret,
            "from": self._sender,
            # Vonage wants international format without the leading '+'.
            "to": message.destination.lstrip("+"),
            "text": message.body,
            "client-ref": str(message.delivery_id),
        }
        if not message.body.isascii():
            # Non-ASCII text would be mangled by GSM-7; unicode costs more parts but arrives.
            form["type"] = "unicode"
        if left is not None:
            # Vonage's minimum ttl is 20 s: a message closer to expiry gets up to
            # 20 s of extra life rather than being refused.
            form["ttl"] = str(min(MAX_TTL_MS, max(MIN_TTL_MS, int(left * 1000))))
        return form

    async def _send(self, message: Message, left: float | None) -> Outcome:
        try:
            response = await self._post("/sms/json", data=self._form(message, left))
        except TRANSPORT_ERRORS as exc:
            return transport_outcome(exc)
        return _classify_response(response)


def _classify_response(response: Answer) -> Outcome:
    status = response.status
    if status == 429:
        return Outcome.retry(
            "Vonage 429: throughput limit", header_retry_after(response.headers), status=429
        )
    if status in (401, 403):
        return Outcome.config(f"Vonage {status}: credentials refused", status=status)
    if status >= 500:
        return Outcome.unknown(f"Vonage {status}: server error", status=status)
    try:
        parts = response.json()["messages"]
    except (ValueError, KeyError, TypeError):
        return Outcome.permanent(f"Vonage {status}: unreadable answer", status=status)
    if status != 200 or not parts:
        return Outcome.permanent(f"Vonage {status}: no message in the answer", status=status)
    failed = [p for p in parts if str(p.get("status")) != "0"]
    if not failed:
        ids = [p.get("message-id") for p in parts]
        return Outcome.sent(ids[0], parts=len(parts), message_ids=ids)
    return classify(str(failed[0].get("status")), str(failed[0].get("error-text", "")))


def classify(code: str, text: str) -> Outcome:
    """Map a Vonage per-message status code to an Outcome."""
    reason = f"Vonage status {code}: {short(text)}"
    detail = {"code": code}
    if code in RETRY_STATUSES:
        return Outcome.retry(reason, None, **detail)
    if code in DEAD_STATUSES:
        return Outcome.dead_destination(reason, **detail)
    if code in CONFIG_STATUSES:
        return Outcome.config(reason, **detail)
    return Outcome.permanent(reason, **detail)
