"""Mailchimp Transactional (Mandrill) webhooks: ``POST /webhooks/mailchimp``.

Mandrill posts a form with one field, ``mandrill_events``: a JSON array of up
to a thousand events. ``X-Mandrill-Signature`` = base64(HMAC-SHA1(webhook key,
URL + each POST parameter's name and value, sorted by name)), where URL is the
webhook URL exactly as registered in Mandrill: we sign the configured public
URL, not the one this server sees. Mandrill checks a new webhook URL with a
HEAD request, answered 200 without authentication (it reveals nothing).
``/webhooks/mandrill``, the path before the provider had one name, is still
served: Mandrill signs the URL it calls, so only the user can move a webhook
registered there (by registering it again in Mandrill).

Mandrill gives events no id of their own; (message ``_id``, event, ``ts``)
identifies one. Our ids come back in ``msg.metadata`` (set by the adapter).
Mandrill's ``send`` event means the receiving server accepted the message,
which is what the other providers call delivered. Sync events (whitelist,
blacklist) and inbound messages are not receipts and are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from typing import Any

from outbox.webhooks.base import (
    Action,
    Inbound,
    Receipt,
    Rejected,
    address,
    event_id,
    from_unix,
    our_id,
    parse_form,
    parse_json,
    text,
)
from outbox.webhooks.config import WebhookConfig

NAME = "mailchimp"  # the adapter's name, as stored on deliveries
PATH = "/webhooks/mailchimp"
# Still served: webhooks registered in Mandrill before the rename call this URL.
OLD_PATHS = ("/webhooks/mandrill",)
# Mandrill checks that a new webhook URL exists with HEAD.
METHODS = ["POST", "HEAD"]
SIGNATURE_HEADER = "X-Mandrill-Signature"
EVENTS_FIELD = "mandrill_events"

OPT_OUTS = {"spam", "unsub"}


def signature(key: str, url: str, params: dict[str, str]) -> str:
    """Mandrill's signature of a POST to ``url`` with form ``params``."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def receipts(inbound: Inbound, config: WebhookConfig) -> list[Receipt]:
    """The receipts of a signed batch; Rejected if it is not genuine or not readable."""
    assert config.mailchimp_webhook_key is not None  # refused until it is set
    sig = inbound.header(SIGNATURE_HEADER)
    if sig is None:
        raise Rejected("unsigned", f"no {SIGNATURE_HEADER} header")
    params = parse_form(inbound.body)
    expected = signature(config.mailchimp_webhook_key, inbound.url, params)
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        raise Rejected("bad_signature", f"{SIGNATURE_HEADER} does not match the URL and body")
    if EVENTS_FIELD not in params:
        raise Rejected("malformed", f"no {EVENTS_FIELD} field")
    events = parse_json(params[EVENTS_FIELD], EVENTS_FIELD)
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Rejected("malformed", f"{EVENTS_FIELD} is not a JSON array of objects")
    found = []
    for event in events:
        msg = event.get("msg")
        if not isinstance(event.get("event"), str) or not isinstance(msg, dict):
            continue  # a sync or inbound event: not about a message we sent
        found.append(_receipt(event["event"].lower(), event, msg))
    return found


def _receipt(kind: str, event: dict[str, Any], msg: dict[str, Any]) -> Receipt:
    message_id = text(event.get("_id") or msg.get("_id"), 100)
    metadata = msg.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    ts = event.get("ts") or msg.get("ts")
    base = Receipt(
        provider=NAME,
        event_id=event_id(message_id, kind, ts),
        status=kind,
        delivery_id=our_id(metadata.get("outbox_delivery_id")),
        notification_id=our_id(metadata.get("outbox_notification_id")),
        provider_message_id=message_id,
        address=address(msg.get("email")),
        occurred_at=from_unix(ts),
        detail={"state": text(msg.get("state"), 20)} if msg.get("state") else {},
    )
    why = text(" ".join(str(msg[k]) for k in ("bounce_description", "diag") if msg.get(k)))
    if kind == "send":
        return replace(base, action=Action.DELIVERED)
    if kind == "hard_bounce":
        return replace(
            base,
            action=Action.DEAD,
            suppress=True,
            reason=f"Mandrill hard bounce: {why or 'no reason given'}",
        )
    if kind == "soft_bounce":
        # Mandrill has given up on this message; the address may work another day.
        return replace(
            base, action=Action.DEAD, reason=f"Mandrill soft bounce: {why or 'no reason given'}"
        )
    if kind == "reject":
        # The address is on Mandrill's rejection list (earlier bounce, spam, unsub).
        listed = msg.get("reject")
        listed = listed.get("reason") if isinstance(listed, dict) else listed
        return replace(
            base,
            action=Action.DEAD,
            suppress=True,
            reason=f"Mandrill reject: {text(listed, 60) or 'on the rejection list'}",
        )
    if kind in OPT_OUTS:
        return replace(base, opt_out=True, reason=f"Mandrill {kind}")
    return base  # deferral, open, click: recorded only
