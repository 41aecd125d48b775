"""Channel limits: whether a rendered template can be sent on its channel.

A template can compile and render and still be unsendable: an SMS too many
segments long, a push payload over the 4 KiB that APNs and FCM accept, an email
with no subject or one that would break its header. :func:`check_limits` refuses
those with a :class:`LimitError` naming the template and what was over, never the
notification's data. :func:`sms_segments` and :func:`push_payload_size` are the
measures, also used to show a preview's size.

    TemplateError        (outbox.templates) cannot be compiled or rendered with this data
    └── LimitError       it rendered, but the result is too big or incomplete for its channel

Not to be confused with rate limits (how often we may send), which the worker's gate
applies before sending (workers/gate.py, docs/rate-limits.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from outbox.errors import UnknownChannel
from outbox.templates import CHANNELS, Rendered, TemplateError, TemplateVersion

__all__ = [
    "DEFAULT_MAX_SMS_SEGMENTS",
    "PUSH_PAYLOAD_LIMIT_BYTES",
    "LimitError",
    "check_limits",
    "push_payload_size",
    "sms_segments",
]

DEFAULT_MAX_SMS_SEGMENTS = 10
# APNs rejects larger payloads (FCM's limit is the same 4 KiB).
PUSH_PAYLOAD_LIMIT_BYTES = 4096


class LimitError(TemplateError):
    """The rendered message does not fit its channel (too long, too big, or incomplete)."""


# --- SMS segments ----------------------------------------------------------------------

# GSM 03.38 default alphabet (without ESC, 0x1B) and the extension table, whose
# characters are sent as ESC + char and so cost two septets.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
# (encoding, units per single message, units per part of a concatenated message):
# the user data header of a concatenated SMS takes 7 septets / 3 UTF-16 units.
_GSM7 = ("gsm7", 160, 153)
_UCS2 = ("ucs2", 70, 67)


def sms_segments(text: str) -> tuple[str, int]:
    """The encoding (``"gsm7"`` or ``"ucs2"``) and number of segments ``text`` is sent as.

    GSM-7 if every character is in the GSM 03.38 alphabet (extension characters
    ``^ { } [ ] ~ \\ | €`` and form feed count twice), else UCS-2 counted in UTF-16
    code units (an emoji is two). One message holds 160 septets / 70 units; a
    concatenated one 153 / 67 per part, and an escape pair or surrogate pair is
    never split across parts. Empty text is 0 segments.
    """
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENSION for c in text):
        encoding, single, per_part = _GSM7
        costs = [2 if c in _GSM7_EXTENSION else 1 for c in text]
    else:
        encoding, single, per_part = _UCS2
        costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    total = sum(costs)
    if total <= single:
        return encoding, (1 if total else 0)
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return encoding, parts


# --- push payload size -----------------------------------------------------------------


def push_payload_size(rendered: Rendered, data: Mapping[str, Any]) -> int:
    """Bytes of the APNs-style JSON payload for ``rendered``: the alert plus ``data`` keys.

    Compact UTF-8 JSON, as the HTTP clients send it. The ``aps`` key is ours: a data
    key of that name does not replace the alert.
    """
    alert: dict[str, str] = {"body": rendered.body}
    if rendered.title is not None:
        alert = {"title": rendered.title, **alert}
    payload = {**data, "aps": {"alert": alert}}
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(encoded.encode("utf-8"))


# --- the check -------------------------------------------------------------------------


def check_limits(
    channel: str,
    rendered: Rendered,
    data: Mapping[str, Any],
    *,
    template: TemplateVersion | None = None,
    max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
) -> None:
    """Raise LimitError if ``rendered`` cannot be sent on ``channel``.

    push: the JSON payload must fit in 4096 bytes. sms: non-empty and at most
    ``max_sms_segments`` segments. email: a non-empty, single-line subject.
    Pass ``template`` so the error names it.
    """

    def fail(reason: str) -> LimitError:
        if template is None:
            return LimitError(reason)
        return LimitError(
            reason, key=template.key, version=template.version, locale=template.locale
        )

    if channel == "push":
        try:
            size = push_payload_size(rendered, data)
        except (TypeError, ValueError):
            raise fail("push data cannot be encoded as JSON") from None
        if size > PUSH_PAYLOAD_LIMIT_BYTES:
            raise fail(
                f"push payload is {size} bytes, over the limit of {PUSH_PAYLOAD_LIMIT_BYTES}"
            )
    elif channel == "sms":
        encoding, segments = sms_segments(rendered.body)
        if segments == 0:
            raise fail("sms body is empty")
        if segments > max_sms_segments:
            raise fail(
                f"sms body is {segments} segments ({encoding}),"
                f" over the limit of {max_sms_segments}"
            )
    elif channel == "email":
        subject = rendered.subject
        if subject is None or not subject.strip():
            raise fail("email subject is missing or empty")
        # A line break in a header is at best rejected by the provider, at worst injected.
        if "\n" in subject or "\r" in subject:
            raise fail("email subject contains a line break")
    else:
        raise UnknownChannel(
            f"unknown channel {channel!r}: expected one of {', '.join(CHANNELS)}",
            field="channel",
        )
