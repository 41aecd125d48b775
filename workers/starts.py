"""Start marks: a send's 'processing' event, committed before its provider call begins.

Lease recovery counts an attempt as in doubt (possibly sent, so possibly
duplicated) only if its 'processing' event exists (sql/queries/worker.sql,
``start`` and ``recover_leases``). So the event must be committed before any
request leaves, and written only for sends that really start: not at claim,
where deliveries that are then deferred, suppressed, expired or dead on render
would count as in doubt too.

One statement per group, not per send: the sends of a claimed batch reach
their provider call within moments of each other, and :meth:`Starts.begin`
lets them wait together. While one group's statement is in flight the next
group gathers (group commit), on the ``start`` connection, which nothing else
uses, so a claim or a record in progress never delays a send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from outbox.workers import store
from outbox.workers.connections import CONNECTION_ERRORS, Connections
from outbox.workers.delivery import ClaimedDelivery

ROLE = "start"

#: Between two tries of a group's statement after a lost connection.
RETRY_SECONDS = 0.1


class Starts:
    """Writes the start marks of worker ``worker_id``'s sends, a group at a time."""

    def __init__(self, worker_id: str, connections: Connections, log: Any) -> None:
        self.worker_id = worker_id
        self.connections = connections
        self._log = log
        # Sends waiting for their mark, with the future each one waits on.
        self._waiting: list[tuple[ClaimedDelivery, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def begin(self, row: ClaimedDelivery) -> bool:
        """Mark ``row``'s attempt started; True once committed, False if it must not start
        (this worker no longer holds its lease at that attempt, or the mark failed)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="start")
        return await future

    async def _write_groups(self) -> None:
        while self._waiting:
            # One turn of the loop first: the other sends of the batch join this group.
            await asyncio.sleep(0)
            group, self._waiting = self._waiting, []
            try:
                started = await self._write(group)
            except BaseException:
                for _, future in group:
                    if not future.done():
                        future.set_result(False)
                raise
            for row, future in group:
                if not future.done():
                    future.set_result(row.id in started)

    async def _write(
        self, group: Sequence[tuple[ClaimedDelivery, asyncio.Future[bool]]]
    ) -> set[int]:
        """The group's statement, retried through connection loss; any other error leaves
        the group unstarted (its results say why, and the rows are claimed again)."""
        starting = [(row.id, row.attempts) for row, _ in group]
        while True:
            try:
                conn = await self.connections.get(ROLE)
                return await store.start(conn, worker=self.worker_id, starting=starting)
            except CONNECTION_ERRORS as exc:
                await self.connections.drop(ROLE, exc)
                if self.connections.stopping:
                    return set()
                await asyncio.sleep(RETRY_SECONDS)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the sends for good
                self._log.exception(
                    "delivery.start_failed", count=len(group), error=type(exc).__name__
                )
                return set()
