"""SendGrid Event Webhook: ``POST /webhooks/sendgrid`` (a JSON array of events).

Signed Event Webhook: ``X-Twilio-Email-Event-Webhook-Signature`` is an ECDSA
(P-256, SHA-256) signature over the timestamp header followed by the raw body,
checked with the SDK's ``EventWebhook`` and the verification key SendGrid shows
(``OUTBOX_SENDGRID_WEBHOOK_PUBLIC_KEY``). The raw body is verified before it is
parsed: re-serialised JSON would not match. A timestamp further from now than
the tolerance is refused as stale, so a captured batch cannot be replayed later.

Events are de-duplicated by ``sg_event_id``. Our ids come back as top-level
fields (the adapter's ``custom_args``); when they are missing, the part of
``sg_message_id`` before the first dot is the ``X-Message-Id`` we stored.
"""

from __future__ import annotations

import binascii
import functools
from dataclasses import replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from sendgrid.helpers.eventwebhook import EventWebhook

from outbox.webhooks.base import (
    Action,
    Inbound,
    Receipt,
    Rejected,
    address,
    check_fresh,
    derived_event_id,
    event_id,
    from_unix,
    our_id,
    parse_json,
    text,
)
from outbox.webhooks.config import WebhookConfig

NAME = "sendgrid"
PATH = "/webhooks/sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# Drop reasons that say the address itself is unusable (SendGrid drops mail to
# addresses on its own bounce, unsubscribe and spam-report lists). Other drops
# (spam content, an invalid SMTPAPI header, a quota) are about the message or
# the account: the delivery dies, the address is not suppressed.
ADDRESS_DROPS = ("bounced address", "unsubscribed address", "spam reporting address", "invalid")
OPT_OUTS = {"spamreport", "unsubscribe"}


@functools.cache
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key.strip())


def receipts(inbound: Inbound, config: WebhookConfig) -> list[Receipt]:
    """Every event of a signed batch; Rejected if the batch is not genuine, fresh and readable."""
    assert config.sendgrid_public_key is not None  # the app refuses requests until it is set
    signature = inbound.header(SIGNATURE_HEADER)
    timestamp = inbound.header(TIMESTAMP_HEADER)
    if signature is None or timestamp is None:
        raise Rejected("unsigned", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    try:
        payload = inbound.body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("malformed", "the body is not UTF-8") from None
    verifier = _verifier(config.sendgrid_public_key)
    try:
        valid = verifier.verify_signature(payload, signature, timestamp)
    except (ValueError, binascii.Error, InvalidSignature):  # not base64, not a DER signature
        valid = False
    if not valid:
        raise Rejected("bad_signature", f"{SIGNATURE_HEADER} does not verify")
    check_fresh(timestamp, inbound.now, config.timestamp_tolerance_s)
    events = parse_json(payload, "the body")
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and isinstance(e.get("event"), str) and e["event"] for e in events
    ):
        raise Rejected("malformed", "expected a JSON array of event objects")
    return [_receipt(e) for e in events]


def _receipt(event: dict[str, Any]) -> Receipt:
    kind = event["event"].lower()
    sg_message_id = event.get("sg_message_id")
    message_id = sg_message_id.split(".", 1)[0] if isinstance(sg_message_id, str) else None
    sg_event_id = event.get("sg_event_id")
    base = Receipt(
        provider=NAME,
        # Without sg_event_id (never seen, but cheap to survive) the event's own
        # content is its identity: a repeat hashes the same.
        event_id=event_id(sg_event_id) if sg_event_id else derived_event_id(event),
        status=kind,
        delivery_id=our_id(event.get("outbox_delivery_id")),
        notification_id=our_id(event.get("outbox_notification_id")),
        provider_message_id=message_id or None,
        address=address(event.get("email")),
        occurred_at=from_unix(event.get("timestamp")),
        detail={
            k: v
            for k, v in (
                ("type", text(event.get("type"), 20)),
                ("smtp_status", text(event.get("status"), 20)),
            )
            if v
        },
    )
    bounce_type = str(event.get("type") or "bounce").lower()
    smtp = text(" ".join(str(event[k]) for k in ("status", "reason") if event.get(k)))
    if kind == "delivered":
        return replace(base, action=Action.DELIVERED)
    if kind == "bounce" and bounce_type == "bounce":
        return replace(
            base,
            action=Action.DEAD,
            suppress=True,
            reason=f"SendGrid bounce: {smtp or 'no reason given'}",
        )
    if kind == "dropped":
        why = text(event.get("reason")) or "no reason given"
        return replace(
            base,
            action=Action.DEAD,
            reason=f"SendGrid dropped: {why}",
            suppress=why.lower().startswith(ADDRESS_DROPS),
        )
    if kind in OPT_OUTS:
        return replace(base, opt_out=True, reason=f"SendGrid {kind}")
    # processed, deferred, bounce of type "blocked" (temporary), open, click,
    # group_unsubscribe (we send no ASM groups): recorded only.
    return base
