"""Email through Mailchimp Transactional (Mandrill), ``messages/send``, with aiohttp.

The API key travels in the JSON body (Mandrill's convention). Our ids go in
``metadata`` (echoed on webhooks). A 200 answer holds one result per
recipient; ours has one recipient, whose ``status`` and ``reject_reason``
decide the outcome. Errors come back as ``{"status": "error", "name": ...}``
(with HTTP 500 for most of them, so the name decides, not the status code).
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

MANDRILL_URL = "https://mandrillapp.com/api/1.0"

SENT_STATUSES = {"sent", "queued", "scheduled"}
# reject_reason -> kind. Hard bounces, invalid addresses, unsubscribes and spam
# complaints all mean: stop sending to this address.
_REJECTS = {
    "hard-bounce": "dead_destination",
    "invalid": "dead_destination",
    "unsub": "dead_destination",
    "spam": "dead_destination",
    "soft-bounce": "retry",
    "invalid-sender": "config",
    "unsigned": "config",
    "test-mode-limit": "config",
    "custom": "permanent",
    "rule": "permanent",
}
_ERRORS = {
    "Invalid_Key": "config",
    "PaymentRequired": "config",
    "Unknown_Subaccount": "config",
    "ValidationError": "permanent",
    "Unknown_Template": "permanent",
    "GeneralError": "retry",
}


class MailchimpProvider(HttpAdapter):
    """Sends email through Mailchimp Transactional (Mandrill).

    Mandrill has no TTL, so ``left`` goes unused: not sending a message whose
    time is up (the base class does) is all we can do.
    """

    name = "mailchimp"
    channel = "email"

    def __init__(
        self,
        *,
        api_key: str,
        from_email: str,
        base_url: str | None = None,
        timeout: float = 10.0,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        super().__init__(
            secrets=(api_key,),
            timeout=timeout,
            base_url=base_url or MANDRILL_URL,
            connections=connections,
        )
        self._api_key = api_key
        self._from = from_email

    def request_body(self, message: Message) -> dict:
        """The messages/send JSON for one message."""
        body: dict = {
            "subject": message.subject or "",
            "from_email": self._from,
            "to": [{"email": message.destination, "type": "to"}],
            "metadata": {
                "outbox_delivery_id": str(message.delivery_id),
                "outbox_notification_id": str(message.notification_id),
                "outbox_message_id": message.message_id,
            },
        }
        if message.body:
            body["text"] = message.body
        if message.html_body:
            body["html"] = message.html_body
        return {"key": self._api_key, "message": body, "async": False}

    async def _send(self, message: Message, left: float | None) -> Outcome:
        try:
            response = await self._post("/messages/send", json=self.request_body(message))
        except TRANSPORT_ERRORS as exc:
            return transport_outcome(exc)
        return _classify_response(response)


def _classify_response(response: Answer) -> Outcome:
    status = response.status
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if status == 200 and isinstance(answer, list) and answer:
        return classify_result(answer[0])
    if isinstance(answer, dict) and answer.get("status") == "error":
        return classify_error(
            status,
            str(answer.get("name")),
            str(answer.get("message", "")),
            header_retry_after(response.headers),
        )
    if status == 429:
        return Outcome.retry("Mandrill 429", header_retry_after(response.headers), status=429)
    if status >= 500:
        return Outcome.unknown(f"Mandrill {status}: unreadable answer", status=status)
    return Outcome.permanent(f"Mandrill {status}: unreadable answer", status=status)


def classify_result(result: dict) -> Outcome:
    """Map one recipient's result (status, reject_reason) to an Outcome."""
    status = str(result.get("status"))
    message_id = result.get("_id")
    if status in SENT_STATUSES:
        return Outcome.sent(message_id, status=status)
    reject = str(result.get("reject_reason") or status)
    reason = f"Mandrill {status}: {reject}"
    detail = {"status": status, "reject_reason": reject, "id": message_id}
    kind = _REJECTS.get(reject, "dead_destination" if status == "invalid" else "permanent")
    return getattr(Outcome, kind)(reason, **detail)


def classify_error(status: int, name: str, text: str, retry_after: float | None) -> Outcome:
    """Map a Mandrill error answer (by its ``name``) to an Outcome."""
    reason = f"Mandrill {name}: {short(text)}"
    detail = {"status": status, "error": name}
    kind = _ERRORS.get(name)
    if status == 429:
        kind = "retry"
    if kind == "retry":
        return Outcome.retry(reason, retry_after, **detail)
    if kind is not None:
        return getattr(Outcome, kind)(reason, **detail)
    return (
        Outcome.unknown(reason, **detail) if status >= 500 else Outcome.permanent(reason, **detail)
    )
