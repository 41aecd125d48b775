"""Helpers for worker tests: a scripted provider and an in-process worker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from outbox.providers.base import Message, Outcome
from outbox.workers.config import WorkerConfig
from outbox.workers.worker import Worker


class ScriptedProvider:
    """Answers each destination with its scripted outcomes in turn, then `sent`.

    Records every call. `gate`, if set, is awaited before answering (to stall a send).
    """

    def __init__(
        self, name: str = "scripted", script: dict[str, list[Outcome]] | None = None
    ) -> None:
        self.name = name
        self.channel = "*"
        self.script = defaultdict(list, {k: list(v) for k, v in (script or {}).items()})
        self.calls: list[Message] = []
        self.gate: asyncio.Event | None = None

    async def send(self, message: Message) -> Outcome:
        self.calls.append(message)
        if self.gate is not None:
            await self.gate.wait()
        queue = self.script[message.destination]
        if queue:
            return queue.pop(0)
        return Outcome.sent(f"{self.name}-{message.delivery_id}-{message.attempt}")

    async def aclose(self) -> None:
        return None


def make_worker(
    db_url: str,
    provider: Any,
    *,
    rand: Callable[[], float] = lambda: 0.5,
    worker_id: str | None = None,
    clock: Callable[[], datetime] | None = None,
    **config: Any,
) -> Worker:
    config.setdefault("poll_interval_seconds", 0.2)
    config.setdefault("backoff_base_seconds", 10.0)
    routes = {"email": [provider.name], "sms": [provider.name], "push": [provider.name]}
    extra = {"clock": clock} if clock is not None else {}
    return Worker(
        db_url,
        {provider.name: provider},
        routes,
        WorkerConfig(**config),
        rand=rand,
        worker_id=worker_id,
        **extra,
    )
