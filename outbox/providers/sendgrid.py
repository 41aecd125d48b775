"""Email through SendGrid's v3 Mail Send API: the sendgrid SDK's request, sent with aiohttp.

The SDK builds the request: the JSON body from its ``Mail`` helper, the
headers (``Authorization``, ``User-Agent``) from ``SendGridAPIClient``. Its
HTTP client is synchronous (urllib, a thread per send, a new connection per
request, no timeout unless passed), so the request goes out on our pooled
async connections (:class:`~outbox.providers.transport.HttpPool`) instead.

202 means *accepted*, not delivered: the address may still bounce, which
SendGrid reports later on the event webhook. So this adapter cannot answer
``dead_destination`` itself; the webhook receiver does. Our ids travel in
``custom_args`` and come back on every event; ``X-Message-Id`` is kept as the
provider message id (events carry it as the prefix of ``sg_message_id``).
"""

from __future__ import annotations

import json

from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from outbox.providers.base import Message, Outcome
from outbox.providers.transport import (
    DEFAULT_CONNECTIONS,
    TRANSPORT_ERRORS,
    HttpAdapter,
    header_retry_after,
    short,
    transport_outcome,
)

SENDGRID_URL = "https://api.sendgrid.com"
MAIL_SEND_PATH = "/v3/mail/send"


class SendGridProvider(HttpAdapter):
    """Sends email through SendGrid.

    SendGrid has no TTL: not sending a message whose time is up (the base
    class does) is the only way not to send it late.
    """

    name = "sendgrid"
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
        host = (base_url or SENDGRID_URL).rstrip("/")
        super().__init__(
            secrets=(api_key,), timeout=timeout, base_url=host, connections=connections
        )
        self._from = from_email
        sdk = SendGridAPIClient(api_key=api_key, host=host)
        self._headers = {**sdk.client.request_headers, "Content-Type": "application/json"}

    def request_body(self, message: Message) -> dict:
        """The Mail Send JSON for one message, our ids in ``custom_args``."""
        mail = Mail(
            from_email=self._from,
            to_emails=message.destination,
            subject=message.subject or "",
            plain_text_content=message.body or None,
            html_content=message.html_body,
        )
        mail.custom_arg = [
            CustomArg("outbox_delivery_id", str(message.delivery_id)),
            CustomArg("outbox_notification_id", str(message.notification_id)),
            CustomArg("outbox_message_id", message.message_id),
        ]
        return mail.get()

    async def _send(self, message: Message, left: float | None) -> Outcome:
        try:
            body = json.dumps(self.request_body(message)).encode()
        except (ValueError, TypeError) as exc:
            return Outcome.permanent(f"invalid email: {short(exc)}", error="invalid")
        try:
            answer = await self._post(MAIL_SEND_PATH, data=body, headers=self._headers)
        except TRANSPORT_ERRORS as exc:
            return transport_outcome(exc)
        if not 200 <= answer.status < 300:
            return classify(answer.status, answer.body, answer.headers)
        return Outcome.sent(answer.headers.get("X-Message-Id"), status=answer.status)


def _error_text(body: bytes | str | None) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return short(body or "")


def classify(status: int, body: bytes | str | None, headers: object) -> Outcome:
    """Map a SendGrid HTTP error to an Outcome."""
    header_map = dict(headers.items()) if hasattr(headers, "items") else {}
    reason = f"SendGrid {status}: {_error_text(body)}"
    detail = {"status": status}
    if status in (400, 413):
        return Outcome.permanent(reason, **detail)
    if status in (401, 403, 404):
        # 403 can be a temporary block; config pauses the provider and alerts, burns nothing.
        return Outcome.config(reason, **detail)
    if status == 429:
        return Outcome.retry(reason, header_retry_after(header_map), **detail)
    if status >= 500:
        return Outcome.unknown(reason, **detail)
    return Outcome.permanent(reason, **detail)
