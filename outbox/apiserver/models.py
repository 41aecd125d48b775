"""The request and response bodies of the HTTP API, as pydantic models (and so the OpenAPI schemas).

The models check shapes and JSON types only (a string where a string is due,
no unknown field); the values are checked by the same code as the Python API
(:mod:`outbox.calls`) and the SQL functions behind it, so a request through
HTTP is refused for exactly the reasons a call from Python or SQL would be.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

#: Most notifications in one bulk request.
MAX_BULK = 1000

#: Most recipient ids in one broadcast to a list (a topic has no such limit; chunk
#: it with after_recipient and max_recipients).
MAX_BROADCAST_LIST = 10000


class _In(BaseModel):
    # An unknown field is a typo or a misunderstanding: refused, named.
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every error answer: what kind, what was wrong, and which field when one was."""

    error: str = Field(
        description="A stable code: invalid, unknown_recipient, unknown_template, "
        "unknown_channel, not_found, conflict, unauthorized, forbidden, too_large, "
        "rate_limited, unavailable, internal."
    )
    detail: str = Field(description="What was wrong, for a person.")
    field: str | None = Field(
        default=None, description="The request field at fault (e.g. phone, priority)."
    )
    location: str | None = Field(
        default=None, description="Where it is in the body, e.g. notifications[3].priority."
    )


# -- recipients ----------------------------------------------------------------------------------


class QuietHours(_In):
    start: time = Field(description="Local start, e.g. 22:00 (no time zone).")
    end: time = Field(description="Local end, e.g. 07:00; may be earlier than start.")


class RecipientIn(_In):
    """A field left out is left unchanged; an empty string clears email or phone."""

    email: StrictStr | None = None
    phone: StrictStr | None = Field(default=None, description="E.164, e.g. +14155550123.")
    locale: StrictStr | None = Field(default=None, description="BCP 47, e.g. fr-CA.")
    timezone: StrictStr | None = Field(default=None, description="IANA, e.g. Europe/Paris.")
    quiet_hours: QuietHours | None = None


class Device(BaseModel):
    id: int
    platform: str
    token: str
    environment: str
    active: bool
    deactivated_at: datetime | None
    deactivated_reason: str | None
    registered_at: datetime


class Preference(BaseModel):
    channel: str
    category: str
    opted_in: bool
    updated_at: datetime


class Recipient(BaseModel):
    recipient: str = Field(description="The application's user id.")
    email: str | None
    phone: str | None
    locale: str
    timezone: str
    quiet_hours: QuietHours | None
    created_at: datetime
    updated_at: datetime
    devices: list[Device]
    preferences: list[Preference]


class Erased(BaseModel):
    """What an erasure removed or scrubbed (the recipient's row is gone)."""

    notifications: int
    deliveries: int
    cancelled: int
    devices: int
    preferences: int
    events_scrubbed: int


# -- devices and preferences ---------------------------------------------------------------------


class DeviceIn(_In):
    recipient: StrictStr
    token: StrictStr
    platform: StrictStr = Field(description="apns or fcm.")
    environment: StrictStr = Field(default="production", description="production or sandbox.")


class DeviceRegistered(BaseModel):
    device_id: int


class DeactivateIn(_In):
    token: StrictStr
    reason: StrictStr = "deactivated by the application"


class Deactivated(BaseModel):
    deactivated: bool = Field(description="false if the token was unknown or already inactive.")


class PreferenceIn(_In):
    recipient: StrictStr
    channel: StrictStr = Field(description="email, sms or push.")
    opted_in: StrictBool
    category: StrictStr = Field(default="*", description="A category, or * for all of them.")


# -- notifications -------------------------------------------------------------------------------


class EnqueueIn(_In):
    """One notification; ``message_id`` is the idempotency key."""

    message_id: StrictStr = Field(description="Enqueueing it again returns the first one.")
    template: StrictStr
    recipient: StrictStr | None = Field(default=None, description="Or address.")
    address: StrictStr | None = Field(default=None, description="An email address or E.164 number.")
    data: dict[str, Any] | None = Field(default=None, description="Template variables.")
    channels: list[StrictStr] | None = Field(default=None, description="email, sms, push.")
    category: StrictStr | None = None
    priority: StrictInt = Field(default=0, ge=-100, le=100, description="Higher goes first.")
    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None


class Enqueued(BaseModel):
    id: int = Field(description="The notification id.")
    message_id: str


class BulkIn(_In):
    notifications: list[EnqueueIn] = Field(min_length=1, max_length=MAX_BULK)


class BulkEnqueued(BaseModel):
    ids: list[int] = Field(description="The notification ids, in the order given.")


class CancelIn(_In):
    reason: StrictStr = "cancelled by the application"


class Cancelled(BaseModel):
    cancelled: int = Field(description="Deliveries cancelled (not those sent or in flight).")


class Notification(BaseModel):
    id: int
    message_id: str
    recipient: str | None
    address: str | None
    template_key: str
    category: str | None
    priority: int
    channels: list[str]
    data: dict[str, Any]
    send_at: datetime | None
    expires_at: datetime | None
    created_at: datetime


class Delivery(BaseModel):
    id: int
    channel: str
    destination: str
    status: str
    attempts: int
    max_attempts: int
    in_doubt: int
    provider: str | None
    provider_message_id: str | None
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    finished_at: datetime | None


class Status(BaseModel):
    notification: Notification
    deliveries: list[Delivery]


class Event(BaseModel):
    id: int
    at: datetime
    kind: str
    delivery_id: int | None
    attempt: int | None
    worker: str | None
    detail: Any


class Timeline(BaseModel):
    message_id: str
    events: list[Event]


# -- topics and broadcasts -----------------------------------------------------------------------


class TopicIn(_In):
    description: StrictStr | None = Field(default=None, description="Left unchanged if omitted.")


class Topic(BaseModel):
    id: int
    topic: str


class Subscribed(BaseModel):
    subscribed: bool = Field(description="false if the recipient already was subscribed.")


class Unsubscribed(BaseModel):
    unsubscribed: bool = Field(description="false if the recipient was not subscribed.")


class BroadcastIn(_In):
    """One notification to every subscriber of ``topic`` or to each of ``recipients``.

    Idempotent per (``message_id``, recipient): sending it again reaches only the
    recipients not covered yet, with the first request's content.
    """

    message_id: StrictStr = Field(
        description="At most 200 characters; each recipient's notification is <message_id>/<id>."
    )
    template: StrictStr
    topic: StrictStr | None = Field(default=None, description="Or recipients.")
    recipients: list[StrictStr] | None = Field(
        default=None, max_length=MAX_BROADCAST_LIST, description="Recipient ids (or topic)."
    )
    data: dict[str, Any] | None = Field(default=None, description="Template variables.")
    channels: list[StrictStr] | None = Field(default=None, description="email, sms, push.")
    category: StrictStr | None = None
    priority: StrictInt = Field(default=0, ge=-100, le=100, description="Higher goes first.")
    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    after_recipient: StrictInt | None = Field(
        default=None, description="A topic in chunks: the last_recipient of the previous chunk."
    )
    max_recipients: StrictInt | None = Field(
        default=None, ge=1, description="A topic in chunks: the size of a chunk."
    )


class Broadcast(BaseModel):
    """targets = enqueued + already + unreachable + unknown."""

    message_id: str
    targets: int = Field(description="Recipients this request looked at.")
    enqueued: int = Field(description="Notifications created now.")
    already: int = Field(description="Recipients that had one from an earlier request.")
    unreachable: int = Field(description="Recipients who can receive none of its channels.")
    unknown: int = Field(description="Recipient ids that do not exist.")
    last_recipient: int | str | None = Field(
        description="Pass it as after_recipient for the next chunk; null when there is none."
    )
