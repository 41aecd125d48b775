"""Email through SendGrid's v3 Mail Send API, with the sendgrid SDK.

``sg.send(mail)`` has no timeout, so we call ``sg.client.mail.send.post``
with one. The SDK is synchronous (urllib), so the call runs in a thread.

202 means *accepted*, not delivered: the address may still bounce, which
SendGrid reports later on the event webhook. So this adapter cannot answer
``dead_destination`` itself; the webhook receiver does. Our ids travel in
``custom_args`` and come back on every event; ``X-Message-Id`` is kept as the
provider message id (events carry it as the prefix of ``sg_message_id``).

The SDK logs request headers, API key included, at DEBUG on the
``python_http_client.client`` logger; a filter installed here drops any
record of that logger that contains the key.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from outbox.providers.base import Message, Outcome
from outbox.providers.transport import Adapter, header_retry_after, short

SENDGRID_URL = "https://api.sendgrid.com"
_SDK_LOGGER = "python_http_client.client"


class _DropSecrets(logging.Filter):
    """Drops log records whose message contains one of the secrets."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(s and s in text for s in self.secrets)


class SendGridProvider(Adapter):
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
    ) -> None:
        self._from = from_email
        self._timeout = timeout
        self._secrets = (api_key,)
        self._sg = SendGridAPIClient(api_key=api_key, host=(base_url or SENDGRID_URL).rstrip("/"))
        self._log_filter = _DropSecrets(self._secrets)
        logging.getLogger(_SDK_LOGGER).addFilter(self._log_filter)

    async def aclose(self) -> None:
        """Nothing stays open between sends (urllib); remove the log filter."""
        logging.getLogger(_SDK_LOGGER).removeFilter(self._log_filter)

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
            body = self.request_body(message)
        except (ValueError, TypeError) as exc:
            return Outcome.permanent(f"invalid email: {short(exc)}", error="invalid")
        try:
            response = await asyncio.to_thread(
                self._sg.client.mail.send.post, request_body=body, timeout=self._timeout
            )
        except http_errors.HTTPError as exc:
            return classify(exc.status_code, exc.body, exc.headers)
        except urllib.error.URLError as exc:
            # urllib wraps failures while *sending* (connect refused, connect
            # timeout) in URLError: the request never reached SendGrid.
            return Outcome.retry(
                f"could not reach SendGrid ({type(exc.reason).__name__})", error="URLError"
            )
        except TimeoutError as exc:  # socket.timeout is TimeoutError
            return Outcome.unknown(
                f"no answer from SendGrid before the timeout ({type(exc).__name__})",
                error="timeout",
            )
        except OSError as exc:  # connection dropped while reading the answer
            return Outcome.unknown(
                f"connection to SendGrid failed after sending ({type(exc).__name__})",
                error=type(exc).__name__,
            )
        headers = response.headers
        return Outcome.sent(headers.get("X-Message-Id"), status=response.status_code)


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
