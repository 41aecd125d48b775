"""Exceptions raised by Outbox.

    OutboxError                 every error Outbox raises on purpose
    ├── ValidationError         bad input to enqueue/register: names the field and value;
    │   │                       nothing was written
    │   ├── UnknownRecipient
    │   ├── UnknownTemplate
    │   └── UnknownChannel
    ├── NotFound                an id or message id that does not exist
    ├── IllegalTransition       a state change the database refused (e.g. requeue of a
    │                           delivery that is not dead)
    ├── UnsupportedConnection   (also a TypeError) not a connection this API can use, e.g.
    │                           an async connection given to outbox.enqueue (use outbox.aio)
    └── DatabaseUnavailable     the database could not be reached or started

Messages say what was wrong and with which value.
"""

from __future__ import annotations


class OutboxError(Exception):
    """Base class of every error Outbox raises on purpose."""


class ValidationError(OutboxError, ValueError):
    """Bad input: the message names the field and the value. Nothing was written."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownRecipient(ValidationError):
    """No recipient has that id."""


class UnknownTemplate(ValidationError):
    """No active template version has that key (for that channel)."""


class UnknownChannel(ValidationError):
    """The channel is not one of email, sms, push."""


class NotFound(OutboxError, LookupError):
    """The id or message id does not exist."""


class IllegalTransition(OutboxError):
    """The database refused a state change that is not allowed from the current state."""


class UnsupportedConnection(OutboxError, TypeError):
    """The connection is not one this API can run on (an async one given to the sync API,
    a sync one given to ``outbox.aio``, or not a database connection at all)."""


class DatabaseUnavailable(OutboxError):
    """The database could not be reached, or the embedded server could not be started."""
