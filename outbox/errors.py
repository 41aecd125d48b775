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
    ├── DatabaseUnavailable     the database could not be reached or started
    ├── SchemaError             the database's outbox schema is not the one this Outbox
    │   │                       needs (outbox.migrate.check); the message says what to run
    │   ├── SchemaNotInstalled  never migrated: run `outbox migrate`
    │   ├── SchemaBehind        an older revision: run `outbox migrate`
    │   └── SchemaAhead         a newer Outbox migrated it: run that release
    ├── ConfigError             a setting is unusable: names the OUTBOX_* variable
    │   ├── ProviderConfigError a listed provider is unknown, lacks a credential, or has
    │   │                       a malformed setting (outbox/providers/registry.py)
    │   └── WebhookConfigError  a webhooks setting is unusable (outbox/webhooks/config.py)
    ├── TemplateError           a template cannot be compiled, or rendered with this data
    │   ├── TemplateTimeout     rendering ran past its time limit
    │   └── LimitError          it rendered, but does not fit its channel
    │                           (defined in outbox/channel_limits.py)
    └── Rejected                a webhook request refused before anything was written
                                (outbox/webhooks/base.py)

Messages say what was wrong and with which value, and never carry a secret.
Classes are defined here (and re-exported where they are used) so that this
tree is the whole list; LimitError stays with the channel limits it describes.
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


# --- the schema revision (outbox.migrate.check) ------------------------------------------


class SchemaError(OutboxError):
    """The database's outbox schema is not at the revision this Outbox needs.

    ``database`` is the database's name, ``current`` its revision (None when not
    installed) and ``needed`` the revision this Outbox's migrations end at.
    """

    def __init__(self, message: str, *, database: str, current: str | None, needed: str) -> None:
        super().__init__(message)
        self.database = database
        self.current = current
        self.needed = needed


class SchemaNotInstalled(SchemaError):
    """The database has no outbox schema: `outbox migrate` was never run on it."""


class SchemaBehind(SchemaError):
    """The database is at an older revision: `outbox migrate` brings it to this one."""


class SchemaAhead(SchemaError):
    """The database is at a revision this Outbox does not know: a newer release migrated it."""


# --- configuration ----------------------------------------------------------------------


class ConfigError(OutboxError, ValueError):
    """A setting is unusable; the message names its OUTBOX_* variable, never a secret value."""


class ProviderConfigError(ConfigError):
    """A listed provider cannot be built; the message names the setting to fix."""


class WebhookConfigError(ConfigError):
    """A webhooks setting is unusable; the message names it."""


# --- templates --------------------------------------------------------------------------


class TemplateError(OutboxError):
    """The template cannot be compiled, or rendered with this data.

    The message names the template, the field and line, and what went wrong;
    the attributes carry the same facts for the event log.
    """

    def __init__(
        self,
        reason: str,
        *,
        key: str | None = None,
        version: int | None = None,
        locale: str | None = None,
        field: str | None = None,
        line: int | None = None,
        variable: str | None = None,
    ) -> None:
        self.reason = reason
        self.key = key
        self.version = version
        self.locale = locale
        self.field = field
        self.line = line
        self.variable = variable
        super().__init__(self._message())

    def _message(self) -> str:
        where = "template"
        if self.key is not None:
            where = f"template {self.key!r} v{self.version} ({self.locale or 'default'})"
        message = f"{where}: {self.reason}"
        if self.field is not None:
            message += f" in {self.field}"
            if self.line is not None:
                message += f" line {self.line}"
        return message


class TemplateTimeout(TemplateError):
    """Rendering ran past its time limit (``outbox.templates.render``'s ``timeout``)."""


# --- webhooks ---------------------------------------------------------------------------


class Rejected(OutboxError):
    """A request refused before anything was written; ``reason`` labels the metric.

    Reasons (a closed set, so metric labels stay bounded):

        not_configured  404  the provider's secret is not set: nothing could be verified
        unsigned        401  the signature (or its timestamp) is missing
        bad_signature   403  the signature does not verify
        stale           403  signed, but its timestamp is outside the tolerance
        malformed       400  verified (or unverifiable) content that cannot be read
        too_large       413  the body is over the size limit
    """

    STATUS = {
        "not_configured": 404,
        "unsigned": 401,
        "bad_signature": 403,
        "stale": 403,
        "malformed": 400,
        "too_large": 413,
    }

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.STATUS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.status_code = self.STATUS[reason]
