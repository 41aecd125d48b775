"""Vonage (Nexmo) SMS API delivery receipts: ``POST /webhooks/vonage``.

Authentication. The SMS API signs its webhooks once signing is enabled on the
account (Vonage support turns it on; the dashboard then shows the *signature
secret* and lets you pick the method). A signed receipt carries ``sig`` and
``timestamp`` parameters: ``sig`` is the hex digest, over every other
parameter sorted by name as ``&name=value`` (``&`` and ``=`` in values
replaced by ``_``), of either MD5 with the secret appended (``md5hash``, the
default) or an HMAC keyed by the secret (``md5``, ``sha1``, ``sha256``,
``sha512``). This is what Vonage's own SDKs compute; we do the same, and refuse
receipts without a valid ``sig`` or with a ``timestamp`` outside the tolerance.
There is no unsigned mode: without signing enabled, configure nothing and
Vonage receipts are refused (and counted) rather than trusted.

Receipts come as a form POST or as JSON (dashboard: "POST" or "POST-JSON").
Our delivery id travels as ``client-ref``; ``messageId`` is Vonage's id for
one part of the message (a long SMS has several parts, each with a receipt).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from outbox.webhooks.base import (
    Action,
    Inbound,
    Receipt,
    Rejected,
    address,
    check_fresh,
    event_id,
    from_unix,
    our_id,
    parse_form,
    parse_json,
    text,
)
from outbox.webhooks.config import WebhookConfig

NAME = "vonage"
PATH = "/webhooks/vonage"
# A delivery receipt is a dozen short fields, well under 1 KiB. Its signature is
# inside it, so the body is parsed before anything is verified: a body this size
# or larger is refused unread.
MAX_BODY_BYTES = 8 * 1024

FAILED = {"failed", "rejected", "expired"}
# DLR err-code values that say the number itself is unusable.
DEAD_NUMBER_CODES = {"3": "absent subscriber, permanent", "9": "illegal number"}
DESCRIPTIONS = {
    **DEAD_NUMBER_CODES,
    "1": "unknown",
    "2": "absent subscriber, temporary",
    "4": "call barred by user",
    "5": "portability error",
    "6": "anti-spam rejection",
    "7": "handset busy",
    "8": "network error",
    "10": "illegal message",
    "11": "unroutable",
    "12": "destination unreachable",
    "13": "subscriber age restriction",
    "14": "number blocked by carrier",
    "15": "pre-paid, insufficient funds",
    "16": "gateway quota exceeded",
    "99": "general error",
}


def signature(params: Mapping[str, Any], secret: str, method: str) -> str:
    """Vonage's ``sig`` for ``params`` (without ``sig``), lower-case hex."""
    if method == "md5hash":
        hasher: Any = hashlib.md5(usedforsecurity=False)
    else:
        hasher = hmac.new(secret.encode(), digestmod=method)
    for name in sorted(params):
        value = params[name]
        if isinstance(value, str):
            value = value.replace("&", "_").replace("=", "_")
        hasher.update(f"&{name}={value}".encode())
    if method == "md5hash":
        hasher.update(secret.encode())
    return str(hasher.hexdigest())


def _params(inbound: Inbound) -> dict[str, Any]:
    if len(inbound.body) > MAX_BODY_BYTES:
        raise Rejected(
            "too_large",
            f"{len(inbound.body)} bytes; a delivery receipt is at most {MAX_BODY_BYTES}",
        )
    if inbound.content_type == "application/json":
        doc = parse_json(inbound.body, "the body")
        if not isinstance(doc, dict):
            raise Rejected("malformed", "expected a JSON object")
        return doc
    return parse_form(inbound.body)


def receipts(inbound: Inbound, config: WebhookConfig) -> list[Receipt]:
    """The one receipt a DLR carries; Rejected if it is not genuine, fresh and readable."""
    assert config.vonage_signature_secret is not None  # refused until it is set
    params = _params(inbound)
    sig = params.pop("sig", None)
    if not isinstance(sig, str) or not sig or "timestamp" not in params:
        raise Rejected("unsigned", "no sig and timestamp parameters (is signing enabled?)")
    expected = signature(params, config.vonage_signature_secret, config.vonage_signature_method)
    if not hmac.compare_digest(sig.lower().encode(), expected.encode()):
        raise Rejected("bad_signature", "sig does not match the parameters")
    check_fresh(str(params["timestamp"]), inbound.now, config.timestamp_tolerance_s)
    message_id, status = params.get("messageId"), params.get("status")
    if not (isinstance(message_id, str) and message_id and isinstance(status, str) and status):
        raise Rejected("malformed", "a delivery receipt needs messageId and status")
    return [_receipt(message_id, status.lower(), params)]


def _receipt(message_id: str, status: str, params: dict[str, Any]) -> Receipt:
    code = str(params.get("err-code") or "").strip()
    msisdn = str(params.get("msisdn") or "").strip()
    base = Receipt(
        provider=NAME,
        event_id=event_id(message_id, status),
        status=status,
        delivery_id=our_id(params.get("client-ref")),
        provider_message_id=message_id,
        # Vonage writes numbers without the '+' of E.164.
        address=address("+" + msisdn) if msisdn.isascii() and msisdn.isdigit() else None,
        occurred_at=from_unix(params.get("timestamp")),
        detail={"error_code": code} if code and code != "0" else {},
    )
    if status == "delivered":
        return replace(base, action=Action.DELIVERED)
    if status not in FAILED:
        return base  # accepted, buffered, unknown: recorded only
    what = (
        f"err-code {code} ({DESCRIPTIONS[code]})"
        if code in DESCRIPTIONS
        else (f"err-code {text(code, 20)}" if code else "no error code")
    )
    return replace(
        base,
        action=Action.DEAD,
        reason=f"Vonage {status}: {what}",
        suppress=code in DEAD_NUMBER_CODES,
    )
