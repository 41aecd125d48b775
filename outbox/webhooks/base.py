"""The receipt seam: what a provider module gets, what it returns, how it refuses.

Each provider module (``twilio``, ``sendgrid``, ``vonage``, ``mailchimp``) has
one job: turn an :class:`Inbound` request into :class:`Receipt` values, or
raise :class:`Rejected`. It verifies the signature first and reads nothing it
has not verified. It never touches the database: ``store`` does, with every
receipt of a request in one statement.

A :class:`Receipt` is provider-neutral. ``action`` is what it may do to its
delivery (only ever forward from ``sent``); ``suppress`` and ``opt_out`` are
what it says about the address, whatever the delivery's status.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

# Defined in outbox.errors (the whole error tree in one place), re-exported here.
from outbox.errors import Rejected

# Provider name -> channel. Names are the adapters' names, as stored in
# outbox.deliveries.provider ("mailchimp" is Mandrill, Mailchimp Transactional).
CHANNELS = {"twilio": "sms", "vonage": "sms", "sendgrid": "email", "mailchimp": "email"}

# Longest provider text kept in a reason or an event (error descriptions are
# diagnostic; a whole SMTP transcript is not).
MAX_TEXT = 200
# Longest event id stored as is; longer ones are hashed (the unique index holds them).
MAX_EVENT_ID = 200
# Our ids are PostgreSQL bigints: a larger number names no row of ours, and passing it
# on would make the database refuse the whole batch it came in.
MAX_ID = 2**63 - 1
# Longest address kept (an email address is at most 254 characters; an E.164 number
# far less). A longer one is no destination of ours, and it would overflow the
# suppressions index.
MAX_ADDRESS = 254
# Deepest JSON nesting read. Receipts nest three levels (a batch, an event, its
# metadata); a body nested deeper than this is not one, and refusing it before
# json.loads keeps the parser's recursion (RecursionError) out of reach.
MAX_JSON_DEPTH = 32


class Action(enum.StrEnum):
    """What a receipt may do to its delivery."""

    NONE = "none"  # recorded as an event only (queued, sent, opened, deferred, ...)
    DELIVERED = "delivered"  # sent -> delivered
    DEAD = "dead"  # sent -> dead, with the reason


@dataclass(frozen=True, slots=True)
class Inbound:
    """One webhook request, as a provider module sees it."""

    body: bytes
    # Case-insensitive (Starlette's Headers, or any mapping with lower-case keys).
    headers: Mapping[str, str]
    # The URL the provider called, as it knows it: the configured public base URL
    # + path + query. Twilio and Mandrill sign this string.
    url: str
    # Unix time of arrival, for timestamp tolerance checks (passed in: testable).
    now: float

    def header(self, name: str) -> str | None:
        """A header's value, or None when missing or blank."""
        value = self.headers.get(name.lower()) or self.headers.get(name)
        return value.strip() if value and value.strip() else None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Receipt:
    """One provider event about one message. Secret-free; no message bodies."""

    provider: str
    event_id: str  # the provider's event id, or one derived from the event (stable across repeats)
    status: str  # the provider's own status or event name
    action: Action = Action.NONE
    # Why the delivery died or the address is suppressed / opted out; stored.
    reason: str | None = None
    suppress: bool = False  # the address is dead: never send to it again
    opt_out: bool = False  # the person asked to stop (STOP, unsubscribe, spam report)
    delivery_id: int | None = None  # our ids, when the provider echoes them back
    notification_id: int | None = None
    provider_message_id: str | None = None
    address: str | None = None  # the address the event is about (fallback when unmatched)
    occurred_at: datetime | None = None
    # A few provider fields worth keeping (error code, bounce type): small, no secrets.
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return CHANNELS[self.provider]


# --- helpers the provider modules share ------------------------------------------------


def parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded body as a dict; Rejected(malformed) if it is not one.

    Repeated names are refused: no provider we accept sends them, and a
    signature over a multi-valued form is easy to get subtly wrong.
    """
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise Rejected("malformed", "the body is not a UTF-8 form") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise Rejected("malformed", "the form repeats a field")
    return form


# A JSON string (skipped whole, brackets inside it included) or a bracket. Possessive
# quantifiers: an unterminated string costs one linear scan, never backtracking.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


def _too_deep(text: str, limit: int) -> bool:
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text parsed; Rejected(malformed) naming ``what`` if it is not JSON.

    Not JSON either: nesting deeper than ``max_depth`` (checked before parsing)
    and NaN or Infinity, which Python would read but no provider writes.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if _too_deep(text, max_depth):
            raise Rejected("malformed", f"{what} nests deeper than {max_depth} levels")
        return json.loads(text, parse_constant=_no_constant)
    # RecursionError: the depth check makes it unreachable; kept so that a parser
    # change can never turn bad input back into a 500.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Rejected("malformed", f"{what} is not JSON") from None


def check_fresh(timestamp: str, now: float, tolerance_s: float) -> None:
    """Rejected(stale) unless ``timestamp`` (unix seconds) is within ``tolerance_s`` of now."""
    try:
        when = float(timestamp)
    except ValueError:
        raise Rejected("malformed", "the signature timestamp is not a number") from None
    if abs(now - when) > tolerance_s:
        raise Rejected("stale", f"signed {now - when:.0f}s from now, beyond {tolerance_s:.0f}s")


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """Provider text, trimmed to ``limit`` characters; None when empty."""
    if value is None:
        return None
    value = " ".join(str(value).split())
    if not value:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def event_id(*parts: Any) -> str:
    """An event id from its parts; hashed when too long for the index."""
    joined = ":".join("" if p is None else str(p) for p in parts)
    if len(joined) <= MAX_EVENT_ID:
        return joined
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


def derived_event_id(event: Mapping[str, Any]) -> str:
    """An id for an event that carries none: a hash of its content (repeats hash the same)."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def our_id(value: Any) -> int | None:
    """One of our ids echoed back by a provider, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int):
        return value if 0 < value <= MAX_ID else None
    return None


def address(value: Any) -> str | None:
    """The address an event names, trimmed; None if it is not text or too long to be one."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and len(value) <= MAX_ADDRESS else None


def from_unix(value: Any) -> datetime | None:
    """Unix seconds (number or numeric text) as an aware datetime; None if unreadable."""
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
