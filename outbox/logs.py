"""Logging: structlog, JSON in production, readable console in development.

Every event has a stable name (``delivery.sent``, ``db.connection_lost``, ...)
and delivery events carry message id, delivery id, channel, provider and
attempt. A redaction processor replaces any configured secret value that
reaches a log line, wherever it hides (a URL, an error message), with
``**********``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "**********"


class RedactSecrets:
    """A structlog processor that scrubs the given secret values from every field."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self._scrub(repr(value))
        return value

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if not self.secrets:
            return event_dict
        return {k: self._scrub(v) for k, v in event_dict.items()}


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at each write, not at configure() time.

    Loggers are cached on first use (cache_logger_on_first_use), so a stream bound
    when configure() ran would outlive a swap of sys.stderr: a CLI run inside a
    test harness, or a daemon that redirects its output, would then log to a closed
    file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(
    *, level: str = "INFO", fmt: str = "console", secrets: Iterable[str] = (), stream: Any = None
) -> None:
    """Configure structlog for a process (the CLI and the worker call this once)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactSecrets(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
