"""A provider for development: prints one line per message, always ``sent``.

It serves every channel, so the default settings (console for email, SMS
and push) work on a laptop with no provider account.
"""

from __future__ import annotations

import sys
from typing import TextIO

from outbox.providers.base import Message, Outcome

# The console provider is listed under every channel; "*" says so.
ANY_CHANNEL = "*"
PREVIEW_CHARS = 60


def summary(message: Message) -> str:
    """One line: channel, destination, our ids, and the start of the text."""
    text = (
        message.subject
        if message.channel == "email" and message.subject
        else (message.title or message.body)
    )
    text = " ".join((text or "").split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return (
        f"[outbox console] {message.channel} -> {message.destination} "
        f"message_id={message.message_id} delivery={message.delivery_id} "
        f"attempt={message.attempt} {text!r}"
    )


class ConsoleProvider:
    """Prints a one-line summary of each message to a stream (stdout by default)."""

    name = "console"
    channel = ANY_CHANNEL

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: Message) -> Outcome:
        """Print the summary; the outcome is always ``sent``."""
        stream = self._stream or sys.stdout
        print(summary(message), file=stream, flush=True)
        return Outcome.sent(f"console-{message.delivery_id}-{message.attempt}")

    async def aclose(self) -> None:
        """Nothing to close."""
