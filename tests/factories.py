"""Factories for rows tests need, through the public API (so they obey its checks)."""

from __future__ import annotations

import itertools
from typing import Any

import outbox

_seq = itertools.count(1)


def recipient(conn: Any, external_id: str | None = None, **fields: Any) -> str:
    """A recipient with an email address and a phone number unless told otherwise."""
    n = next(_seq)
    external_id = external_id or f"user-{n}"
    fields.setdefault("email", f"{external_id}@example.com")
    fields.setdefault("phone", f"+1415555{n % 10000:04d}")
    outbox.upsert_recipient(conn, external_id, **fields)
    return external_id


def device(
    conn: Any, recipient_id: str, platform: str = "apns", token: str | None = None, **fields: Any
) -> str:
    token = token or f"{platform}-token-{next(_seq):08d}"
    outbox.register_device(conn, recipient_id, token, platform, **fields)
    return token


def templates(
    conn: Any, key: str = "order_confirmed", channels: tuple[str, ...] = ("email", "sms", "push")
) -> str:
    """An active template version for each channel."""
    for channel in channels:
        if channel == "email":
            outbox.create_template(
                conn,
                key,
                "email",
                "Order {{ order }} is confirmed.",
                subject="Order {{ order }}",
                html_body="<p>Order {{ order }}</p>",
            )
        elif channel == "push":
            outbox.create_template(
                conn, key, "push", "Order {{ order }} is confirmed.", title="Order"
            )
        else:
            outbox.create_template(conn, key, channel, "Order {{ order }} is confirmed.")
    return key


def seven(conn: Any, *, fcm: bool = True) -> Any:
    """user-7 (seven@example.com, +14155550107) with an APNs device (and an FCM one),
    and templates for every channel; committed. Returns ``conn``."""
    recipient(conn, "user-7", email="seven@example.com", phone="+14155550107")
    device(conn, "user-7", "apns", "apns-token-0001")
    if fcm:
        device(conn, "user-7", "fcm", "fcm-token-0002")
    templates(conn)
    conn.commit()
    return conn


def enqueue_committed(conn: Any, message_id: str, **kw: Any) -> int:
    """Enqueue order_confirmed for user-7 (overridable) and commit; the notification id."""
    kw.setdefault("recipient", "user-7")
    kw.setdefault("template", "order_confirmed")
    kw.setdefault("data", {"order": 42})
    nid = outbox.enqueue(conn, message_id, **kw)
    conn.commit()
    return nid
