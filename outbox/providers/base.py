"""The provider seam: one protocol, one ``send`` method, one outcome type.

The worker knows providers only through :class:`Provider`. An adapter turns a
rendered :class:`Message` into one provider request and classifies whatever
happens into an :class:`Outcome`; it never raises for a provider-side failure.
(An exception escaping ``send`` is a bug in the adapter; the worker records it
as an ``unknown`` outcome so the delivery is retried, never lost.)

Outcome kinds, and what the worker does with each:

    sent              the provider accepted it            -> status sent
    retry             transient; try later                -> pending, backoff (>= retry_after)
    permanent         this message can never be sent      -> dead
    dead_destination  the token/number/address is gone    -> dead, device deactivated /
                                                             address suppressed
    config            credentials or account broken       -> pending (attempt not burned),
                                                             provider breaker opened
    unknown           the request may have been accepted  -> pending with backoff, counted
                                                             as an in-doubt send
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


class OutcomeKind(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    PERMANENT = "permanent"
    DEAD_DESTINATION = "dead_destination"
    CONFIG = "config"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    provider_message_id: str | None = None
    # Seconds the provider asked us to wait (Retry-After, rate-limit reset).
    retry_after: float | None = None
    # Human-readable and secret-free: it is stored in the delivery and its events.
    reason: str | None = None
    # A small summary of the provider's response (status code, error code).
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sent(cls, provider_message_id: str | None, **detail: Any) -> Outcome:
        return cls(OutcomeKind.SENT, provider_message_id=provider_message_id, detail=detail)

    @classmethod
    def retry(cls, reason: str, retry_after: float | None = None, **detail: Any) -> Outcome:
        return cls(OutcomeKind.RETRY, retry_after=retry_after, reason=reason, detail=detail)

    @classmethod
    def permanent(cls, reason: str, **detail: Any) -> Outcome:
        return cls(OutcomeKind.PERMANENT, reason=reason, detail=detail)

    @classmethod
    def dead_destination(cls, reason: str, **detail: Any) -> Outcome:
        return cls(OutcomeKind.DEAD_DESTINATION, reason=reason, detail=detail)

    @classmethod
    def config(cls, reason: str, **detail: Any) -> Outcome:
        return cls(OutcomeKind.CONFIG, reason=reason, detail=detail)

    @classmethod
    def unknown(cls, reason: str, **detail: Any) -> Outcome:
        return cls(OutcomeKind.UNKNOWN, reason=reason, detail=detail)


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered delivery, ready for a provider."""

    delivery_id: int
    notification_id: int
    message_id: str
    channel: str  # email | sms | push
    destination: str  # email address, E.164 number, or device token
    attempt: int
    priority: int = 0
    body: str = ""
    subject: str | None = None  # email
    html_body: str | None = None  # email
    title: str | None = None  # push
    data: dict[str, Any] = field(default_factory=dict)  # the notification's data (push payload)
    expires_at: datetime | None = None
    device_platform: str | None = None  # push: apns | fcm
    device_environment: str | None = None  # apns: production | sandbox

    @property
    def collapse_id(self) -> str:
        """Our notification id: a duplicate push then replaces the first on the device."""
        return str(self.notification_id)


@runtime_checkable
class Provider(Protocol):
    """A provider adapter. ``name`` is stable (it is stored on deliveries)."""

    name: str
    channel: str

    async def send(self, message: Message) -> Outcome: ...

    async def aclose(self) -> None: ...
