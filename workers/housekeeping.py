"""Housekeeping: small periodic tasks, each testable alone, run by one tiny scheduler.

Each task is a small class whose fields are its configuration, validated at
construction, with ``run_once(conn)``: one pass, on the connection it is given,
returning what it did. Tests call ``run_once`` directly against a real database;
the worker runs the tasks with :class:`Scheduler`, one scheduler per connection:

* on the ``house`` connection, every few seconds at most:
  :class:`Heartbeat` (extend the leases of the sends in flight),
  :class:`LeaseRecovery` (return expired leases of dead workers to pending),
  :class:`Gauges` (queue depth gauges, when metrics are served) and
  :class:`BreakerRefresh` (re-read the shared circuit breakers);
* on a ``prune`` connection of its own, opened only while it runs:
  :class:`Pruning` (retention, when configured). Not with the others: a long
  prune must never delay the lease heartbeats.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import psycopg
import structlog

from outbox import metrics
from outbox.ops import Pruner
from outbox.workers import store
from outbox.workers.breaker import Breakers
from outbox.workers.connections import CONNECTION_ERRORS, Connections
from outbox.workers.delivery import Leases

log = structlog.get_logger("outbox.worker")


def _positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not (0 < value < math.inf):
            raise ValueError(
                f"{type(owner).__name__}.{name} must be positive and finite, got {value!r}"
            )


class Task(Protocol):
    """One periodic job of housekeeping."""

    name: str

    def delay(self, *, first: bool) -> float:
        """Seconds until the next run (``first``: from the scheduler's start)."""
        ...

    async def run_once(self, conn: store.Conn) -> object:
        """One pass; what it did (for tests and logs)."""
        ...


@dataclass(slots=True)
class Heartbeat:
    """Extends the leases this worker holds, so a long send is not recovered from under it."""

    worker_id: str
    leases: Leases
    lease_seconds: float
    # A third of the lease at most: two heartbeats can be missed before it lapses.
    interval_seconds: float
    name: str = "heartbeat"

    def __post_init__(self) -> None:
        _positive(self, "lease_seconds", "interval_seconds")
        if self.interval_seconds > self.lease_seconds:
            raise ValueError(
                f"Heartbeat.interval_seconds ({self.interval_seconds}) must not "
                f"exceed lease_seconds ({self.lease_seconds})"
            )

    def delay(self, *, first: bool) -> float:
        return 0.0 if first else self.interval_seconds

    async def run_once(self, conn: store.Conn) -> int:
        """Extend every lease held; how many were asked for."""
        ids = self.leases.ids()
        if ids:
            await store.heartbeat(
                conn, worker=self.worker_id, ids=ids, lease_seconds=self.lease_seconds
            )
        return len(ids)


class Recovered(NamedTuple):
    """What one lease recovery did."""

    recovered: int  # back to pending
    dead: int  # that was their last attempt
    cancelled: int = 0  # their cancel was requested while they were in flight


@dataclass(slots=True)
class LeaseRecovery:
    """Returns the expired leases of dead or stalled workers to pending (or dead, or
    cancelled if their cancel was requested)."""

    worker_id: str
    interval_seconds: float
    # Rows per pass: a pass is one statement; a backlog takes a few passes.
    limit: int = 1000
    # Called with the result when anything came back (the worker wakes its claim loop).
    on_recovered: Callable[[Recovered], None] = lambda result: None
    log: Any = field(default_factory=lambda: log)
    name: str = "lease_recovery"

    def __post_init__(self) -> None:
        _positive(self, "interval_seconds")
        if self.limit < 1:
            raise ValueError(f"LeaseRecovery.limit must be at least 1, got {self.limit}")

    def delay(self, *, first: bool) -> float:
        return 0.0 if first else self.interval_seconds

    async def run_once(self, conn: store.Conn) -> Recovered:
        result = Recovered(
            *await store.recover_leases(conn, worker=self.worker_id, limit=self.limit)
        )
        if any(result):
            self.log.info(
                "leases.recovered",
                recovered=result.recovered,
                dead=result.dead,
                cancelled=result.cancelled,
            )
            self.on_recovered(result)
        return result


@dataclass(slots=True)
class Gauges:
    """Refreshes the queue gauges (outbox_queue_*) from one query."""

    gauges: metrics.QueueGauges
    name: str = "gauges"

    def __post_init__(self) -> None:
        _positive(self.gauges, "interval_seconds")

    def delay(self, *, first: bool) -> float:
        return 0.0 if first else self.gauges.interval_seconds

    async def run_once(self, conn: store.Conn) -> dict[str, Any]:
        return await self.gauges.run_once(conn)


@dataclass(slots=True)
class BreakerRefresh:
    """Re-reads the shared circuit breakers of this worker's providers (claiming due probes)."""

    breakers: Breakers
    name: str = "breaker_refresh"

    def __post_init__(self) -> None:
        _positive(self.breakers, "refresh_seconds")

    def delay(self, *, first: bool) -> float:
        return 0.0 if first else self.breakers.refresh_seconds

    async def run_once(self, conn: store.Conn) -> None:
        await self.breakers.refresh(conn)


@dataclass(slots=True)
class Pruning:
    """Retention: deletes finished rows past the pruner's age (an advisory lock lets one
    worker at a time do it)."""

    pruner: Pruner
    # A draw in [0, 1): runs are spread over 0.5 to 1.5 intervals, so that workers
    # started together do not all try at once.
    rand: Callable[[], float]
    log: Any = field(default_factory=lambda: log)
    name: str = "pruning"

    def __post_init__(self) -> None:
        _positive(self.pruner, "interval_seconds")

    def delay(self, *, first: bool) -> float:
        return self.pruner.interval_seconds * (0.5 + self.rand())

    async def run_once(self, conn: store.Conn) -> object:
        try:
            return await self.pruner.run_once(conn, log=self.log)
        except CONNECTION_ERRORS:
            raise
        except psycopg.Error as exc:  # e.g. a statement timeout: try again next time
            self.log.warning("retention.failed", error=type(exc).__name__, detail=str(exc))
            return None


class Scheduler:
    """Runs ``tasks`` on the connection of ``role``, each at its own pace, forever.

    A task that fails is logged and run again at its next turn; a lost connection
    is reopened for the next task. ``close_between``: the connection is closed
    after each run rather than held idle (for rare tasks).
    """

    def __init__(
        self,
        role: str,
        tasks: Sequence[Task],
        connections: Connections,
        *,
        close_between: bool = False,
        logger: Any = None,
    ) -> None:
        if not tasks:
            raise ValueError("a scheduler needs at least one task")
        self.role = role
        self.tasks = tuple(tasks)
        self.connections = connections
        self.close_between = close_between
        self._log = logger or log

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = {task.name: loop.time() + task.delay(first=True) for task in self.tasks}
        while True:
            task = min(self.tasks, key=lambda t: due[t.name])
            await asyncio.sleep(max(0.0, due[task.name] - loop.time()))
            # Paced from the start of a run: a slow run does not push the next one out.
            due[task.name] = loop.time() + task.delay(first=False)
            try:
                await task.run_once(await self.connections.get(self.role))
            except CONNECTION_ERRORS as exc:
                await self.connections.drop(self.role, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - housekeeping must keep running
                self._log.exception(
                    "worker.housekeeping_failed", task=task.name, error=type(exc).__name__
                )
                await self.connections.drop(self.role, exc)
                continue
            if self.close_between:
                await self.connections.close(self.role)
