"""Providers that send nowhere: for development, tests and benchmarks.

* ``noop``: accepts everything (benchmarks measure the queue, not a provider).
* ``record``: accepts everything and appends one JSON line per send to a file
  (``OUTBOX_RECORD_FILE``), so tests running several worker processes can count
  exactly what was sent. Appends of one short line with O_APPEND are atomic, so
  processes never interleave lines.

Both take an optional ``delay_seconds`` (``OUTBOX_LOCAL_PROVIDER_DELAY_SECONDS``)
standing in for a provider's latency, so tests can kill a worker mid-send and
benchmarks can measure concurrency.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from outbox.providers.base import Message, Outcome


class NoopProvider:
    def __init__(self, name: str = "noop", channel: str = "*", delay_seconds: float = 0.0) -> None:
        self.name = name
        self.channel = channel
        self.delay_seconds = delay_seconds

    async def send(self, message: Message) -> Outcome:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        return Outcome.sent(f"{self.name}-{message.delivery_id}-{message.attempt}")

    async def aclose(self) -> None:
        return None


class RecordingProvider:
    def __init__(
        self, path: Path, name: str = "record", channel: str = "*", delay_seconds: float = 0.0
    ) -> None:
        self.name = name
        self.channel = channel
        self.delay_seconds = delay_seconds
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def send(self, message: Message) -> Outcome:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        line = (
            json.dumps(
                {
                    "delivery_id": message.delivery_id,
                    "message_id": message.message_id,
                    "channel": message.channel,
                    "destination": message.destination,
                    "attempt": message.attempt,
                    "pid": os.getpid(),
                    "at": time.time(),
                }
            )
            + "\n"
        )
        os.write(self._fd, line.encode())
        return Outcome.sent(f"{self.name}-{message.delivery_id}-{message.attempt}")

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_records(path: Path) -> list[dict]:
    """Every send a RecordingProvider wrote to ``path``."""
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
