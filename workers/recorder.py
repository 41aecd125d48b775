"""The recorder: finished results, written in batches, fenced by lease owner and attempt.

Per batch, on the ``record`` connection:

1. ``store.record``: one statement for the whole batch; a row is written only
   if this worker still holds its lease at that attempt;
2. dead destinations retired (push tokens deactivated, addresses suppressed);
3. the providers' answers fed to the circuit breakers (at most one statement);
4. per result, the metric and the ``delivery.<kind>`` log line (or
   ``delivery.result_dropped`` for a fenced one).

Connection loss retries the batch until it is written; any other error retries
it row by row, and a row that still fails is left to lease recovery.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from outbox import metrics
from outbox.workers import store
from outbox.workers.breaker import Breakers
from outbox.workers.connections import CONNECTION_ERRORS, Connections
from outbox.workers.decide import Decision
from outbox.workers.delivery import ClaimedDelivery, Leases

Result = tuple[ClaimedDelivery, Decision]

ROLE = "record"


class Recorder:
    """Records the results the claim loop and the sends put on ``results``."""

    def __init__(
        self,
        worker_id: str,
        connections: Connections,
        leases: Leases,
        breakers: Breakers,
        *,
        batch_size: int,
        clock: Callable[[], datetime],
        stats: Counter[str],
        log: Any,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self.worker_id = worker_id
        self.connections = connections
        self.leases = leases
        self.breakers = breakers
        self.batch_size = batch_size
        self.clock = clock
        self.stats = stats
        self._log = log
        self.results: asyncio.Queue[Result] = asyncio.Queue()
        # Called after each batch: the claim loop may be waiting for the recorder.
        self._on_recorded = on_recorded

    async def run(self) -> None:
        """Record forever, a batch at a time (as many results as are waiting, up to the
        batch size)."""
        while True:
            batch = [await self.results.get()]
            while len(batch) < self.batch_size and not self.results.empty():
                batch.append(self.results.get_nowait())
            await self.record(batch)
            for _ in batch:
                self.results.task_done()
            self._on_recorded()

    async def drain(self) -> None:
        """Record everything waiting now (for Worker.run_once: no loop running)."""
        batch = []
        while not self.results.empty():
            batch.append(self.results.get_nowait())
            self.results.task_done()
        if batch:
            await self.record(batch)

    async def record(self, batch: Sequence[Result]) -> None:
        """Record ``batch``, retrying through connection loss until it is written.

        Any other error (a bug, a value the database refuses) must not stop the
        recorder: the batch is retried row by row, and a row that still fails is
        left to lease recovery, which returns it to pending (nothing is lost).
        """
        results = [(row.id, row.attempts, d, row.template_id) for row, d in batch]
        recorded: dict[int, str] = {}
        while True:
            try:
                conn = await self.connections.get(ROLE)
                recorded = await store.record(conn, worker=self.worker_id, results=results)
                await self._retire_destinations(conn, batch)
                break
            except CONNECTION_ERRORS as exc:
                await self.connections.drop(ROLE, exc)
                await asyncio.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                self._log.exception(
                    "delivery.record_failed", count=len(batch), error=type(exc).__name__
                )
                if len(batch) == 1:
                    self.leases.forget(batch[0][0].id)
                    return
                for one in batch:
                    await self.record([one])
                return
        await self._update_breakers(batch)
        for row, decision in batch:
            self.leases.forget(row.id)
            kind = recorded.get(row.id)
            if kind is None:
                self._dropped(row, decision)
            else:
                self._recorded(row, decision, kind)

    def _dropped(self, row: ClaimedDelivery, decision: Decision) -> None:
        # Fenced: our lease expired and the row was recovered (maybe re-claimed).
        self.stats["fenced"] += 1
        metrics.record_fenced(row.channel, decision.provider)
        self._log.warning(
            "delivery.result_dropped",
            delivery_id=row.id,
            message_id=row.message_id,
            channel=row.channel,
            provider=decision.provider,
            attempt=row.attempts,
            status=decision.status,
            reason="lease no longer held",
        )

    def _recorded(self, row: ClaimedDelivery, decision: Decision, kind: str) -> None:
        """Count and log the event the database recorded: ``kind`` is the decision's, or
        ``cancelled`` (its cancel was requested while in flight)."""
        self.stats[kind] += 1
        metrics.record_result(
            row.channel,
            decision.provider,
            kind,
            (self.clock() - row.due_since).total_seconds(),
        )
        # Sends are counted in the metrics; a line each would be most of the log.
        log = self._log.debug if kind == "sent" else self._log.info
        log(
            f"delivery.{kind}",
            delivery_id=row.id,
            message_id=row.message_id,
            channel=row.channel,
            provider=decision.provider,
            attempt=row.attempts,
            error=decision.error,
            **({"instead_of": decision.kind} if kind != decision.kind else {}),
        )

    async def _update_breakers(self, batch: Sequence[Result]) -> None:
        """Feed the batch's provider results to the circuit breakers: one statement at most.

        Every result counts, fenced ones included: the provider's answer was real.
        Best effort: a breaker update lost to an error only delays a transition to
        the next batch, so it must never hold up or undo the recording itself.
        """
        conn = self.connections.current(ROLE)
        if conn is None:
            return
        results = [(d.provider, d.detail.get("outcome"), d.error) for _, d in batch if d.provider]
        try:
            await self.breakers.record(conn, results)
        except CONNECTION_ERRORS as exc:
            await self.connections.drop(ROLE, exc)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self._log.exception(
                "breaker.update_failed", count=len(results), error=type(exc).__name__
            )

    async def _retire_destinations(self, conn: store.Conn, batch: Sequence[Result]) -> None:
        dead = [(row, d) for row, d in batch if d.dead_destination]
        if not dead:
            return
        tokens = [
            (row.destination, d.error or "dead token") for row, d in dead if row.channel == "push"
        ]
        addresses = [
            (row.channel, row.destination, d.error or "dead destination")
            for row, d in dead
            if row.channel != "push"
        ]
        await store.retire_destinations(
            conn, worker=self.worker_id, tokens=tokens, addresses=addresses
        )
        for token, reason in tokens:
            self._log.info("device.deactivated", token_suffix=token[-6:], reason=reason)
