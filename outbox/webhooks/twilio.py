"""Twilio SMS status callbacks: ``POST /webhooks/twilio`` (form-encoded).

Twilio posts to the ``StatusCallback`` URL the adapter gave it
(``OUTBOX_TWILIO_STATUS_CALLBACK_URL``) each time a message changes status:
queued, sending, sent, delivered, undelivered, failed (read, for WhatsApp).
The request is signed with the account's auth token:
``X-Twilio-Signature`` = base64(HMAC-SHA1(token, URL + each parameter's name
and value, sorted by name)). We check it with the SDK's ``RequestValidator``
against the public URL, which is why that URL must be configured: behind a
proxy, the URL this server sees is not the one Twilio signed.

Twilio signs no timestamp, so a captured callback could be replayed; a replay
is the same (MessageSid, MessageStatus) event, recorded once and otherwise
ignored, so it can change nothing.
"""

from __future__ import annotations

from dataclasses import replace

from twilio.request_validator import RequestValidator

from outbox.providers.twilio import DEAD_CODES, OPT_OUT_CODES
from outbox.webhooks.base import (
    Action,
    Inbound,
    Receipt,
    Rejected,
    address,
    event_id,
    parse_form,
    text,
)
from outbox.webhooks.config import WebhookConfig

NAME = "twilio"
PATH = "/webhooks/twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"

# Statuses after which Twilio will not deliver the message.
FAILED = {"undelivered", "failed"}
# A few common delivery error codes, so the reason a DBA reads says something.
DESCRIPTIONS = {
    **DEAD_CODES,
    30003: "unreachable destination handset",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown error",
}


def receipts(inbound: Inbound, config: WebhookConfig) -> list[Receipt]:
    """The one receipt a status callback carries; Rejected if it is not genuine or not readable."""
    assert config.twilio_auth_token is not None  # the app refuses requests until it is set
    signature = inbound.header(SIGNATURE_HEADER)
    if signature is None:
        raise Rejected("unsigned", f"no {SIGNATURE_HEADER} header")
    params = parse_form(inbound.body)
    if not RequestValidator(config.twilio_auth_token).validate(inbound.url, params, signature):
        raise Rejected("bad_signature", f"{SIGNATURE_HEADER} does not match the URL and body")
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or not status:
        raise Rejected("malformed", "a status callback needs MessageSid and MessageStatus")
    return [_receipt(sid, status, params)]


def _receipt(sid: str, status: str, params: dict[str, str]) -> Receipt:
    code_text = params.get("ErrorCode") or None
    # Twilio's codes have five digits; a longer digit string is no code (and past 4300
    # digits int() itself refuses it).
    code = int(code_text) if code_text and code_text.isdigit() and len(code_text) <= 9 else None
    base = Receipt(
        provider=NAME,
        # A status happens once per message: a repeat of the pair is a repeat.
        event_id=event_id(sid, status),
        status=status,
        provider_message_id=sid,
        address=address(params.get("To")),
        detail={"error_code": code} if code is not None else {},
    )
    if status == "delivered":
        return replace(base, action=Action.DELIVERED)
    if status not in FAILED:
        return base  # queued, sending, sent, read...: recorded, nothing moves
    if code in DESCRIPTIONS:
        what = f"error {code} ({DESCRIPTIONS[code]})"
    else:
        what = f"error {text(code_text)}" if code_text else "no error code"
    return replace(
        base,
        action=Action.DEAD,
        reason=f"Twilio {status}: {what}",
        # The number is gone or refuses us: stop sending to it.
        suppress=code in DEAD_CODES,
        # 21610: the recipient replied STOP.
        opt_out=code in OPT_OUT_CODES,
    )
