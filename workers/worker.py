"""The worker: wait -> claim -> send -> record, until told to stop.

One asyncio process; its parts, each in its own module:

* the claim loop (here): claims a batch (one statement, committed before any
  provider call), asks the gate which rows may go, starts a send per row, and
  claims again at once while there is work and free send slots; when the queue
  is empty it waits for a NOTIFY, the poll interval, or stop;
* one delivery (workers/send.py): render (off the loop when it takes more than a
  moment: workers/rendering.py), limits, route, the start mark committed
  (workers/starts.py: one statement for the sends starting together), send,
  decide;
* the recorder (workers/recorder.py): results recorded in batches, fenced by
  lease owner and attempt;
* housekeeping (workers/housekeeping.py): lease heartbeats, lease recovery,
  queue gauges, the circuit breakers' refresh and retention, as small tasks;
* the listener (here): LISTEN outbox_work, sets the wake-up event;
* connections by role, reopened with backoff (workers/connections.py).

Every query goes through workers/store.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import structlog

from outbox import metrics
from outbox.ops import Pruner
from outbox.providers.base import Provider
from outbox.providers.router import Router
from outbox.workers import store
from outbox.workers.breaker import Breakers
from outbox.workers.config import WorkerConfig
from outbox.workers.connections import CONNECTION_ERRORS, Connections
from outbox.workers.decide import RetryPolicy
from outbox.workers.delivery import ClaimedDelivery, Leases, TemplateVersions
from outbox.workers.gate import Gate
from outbox.workers.housekeeping import (
    BreakerRefresh,
    Gauges,
    Heartbeat,
    LeaseRecovery,
    Pruning,
    Recovered,
    Scheduler,
    Task,
)
from outbox.workers.recorder import Recorder
from outbox.workers.rendering import Renderer
from outbox.workers.send import Sender
from outbox.workers.starts import Starts

log = structlog.get_logger("outbox.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """A worker sending ``providers`` along ``routes`` (channel -> provider names, in order).

    It builds its own Router, so that routing asks this worker's circuit breakers.
    """

    def __init__(
        self,
        url: str,
        providers: Mapping[str, Provider],
        routes: Mapping[str, Sequence[str]],
        config: WorkerConfig,
        *,
        worker_id: str | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        gate: Gate | None = None,
        gauges: metrics.QueueGauges | None = None,
        pruner: Pruner | None = None,
    ) -> None:
        self.config = config
        self.id = worker_id or default_worker_id()
        self.rand = rand
        self.clock = clock
        # Periodic extras of housekeeping, off unless given: queue gauges (when metrics
        # are served) and retention (when prune_older_than is set).
        self.gauges = gauges
        self.pruner = pruner
        self.stats: Counter[str] = Counter()
        self._log = log.bind(worker=self.id)
        self.connections = Connections(url, self.id, self.stats, self._log)
        self.leases = Leases()
        # The template versions' contents, by id: a claim returns only ids and hashes.
        self.templates = TemplateVersions()
        # The providers' circuit breakers, shared through PostgreSQL: the router asks
        # them (from memory) which providers may take traffic.
        self.breakers = Breakers(
            config.breaker_policy(),
            self.id,
            providers,
            refresh_seconds=config.breaker_refresh_seconds,
            logger=self._log,
        )
        self.router = Router(providers, routes, available=self.breakers.available)
        self.gate = gate or Gate(clock, self.router, default_quiet=config.default_quiet_hours)
        self.sender = Sender(
            self.router,
            self.breakers,
            self.leases,
            RetryPolicy(
                config.backoff_base_seconds, config.backoff_cap_seconds, config.config_pause_seconds
            ),
            Renderer(config.render_timeout_seconds),
            Starts(self.id, self.connections, self._log).begin,
            clock=clock,
            rand=rand,
            max_sms_segments=config.max_sms_segments,
            log=self._log,
        )
        self._slot_free = asyncio.Event()
        self.recorder = Recorder(
            self.id,
            self.connections,
            self.leases,
            self.breakers,
            batch_size=config.batch_size,
            clock=clock,
            stats=self.stats,
            log=self._log,
            on_recorded=self._slot_free.set,
        )
        self.lease_recovery = LeaseRecovery(
            self.id, config.recover_interval_seconds, on_recovered=self._recovered, log=self._log
        )
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    # -- the loop ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set, then shut down gracefully."""
        stop = stop or asyncio.Event()
        self._log.info(
            "worker.started",
            channels=list(self.config.channels),
            concurrency=self.config.concurrency,
            batch_size=self.config.batch_size,
        )
        helpers = [
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self.recorder.run(), name="record"),
            # The claim loop opens its own at once; the first send and the first
            # record should not wait for theirs.
            asyncio.create_task(self.connections.open("start", "record"), name="open"),
        ]
        helpers += [asyncio.create_task(s.run(), name=s.role) for s in self.housekeeping()]
        stopper = asyncio.create_task(self._wait_stop(stop), name="stop")
        try:
            await self._claim_loop()
        finally:
            stopper.cancel()
            await self._shutdown(helpers)

    async def _wait_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = self.connections.stopping = True
        self._wake.set()
        self._slot_free.set()

    async def _claim_loop(self) -> None:
        cfg = self.config
        while not self._stopping:
            free = cfg.concurrency - len(self._sending)
            # Claim in batches: with sends finishing one by one, claiming each freed
            # slot at once would turn into one claim statement per delivery. And not
            # while a full round of results waits for the recorder: claiming faster
            # than results are recorded only piles up leases at risk.
            if (
                free <= 0
                or self.recorder.results.qsize() >= cfg.concurrency
                or (self._sending and free < min(cfg.batch_size, cfg.concurrency) // 2)
            ):
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            limit = min(cfg.batch_size, free)
            self._wake.clear()
            try:
                rows = await self.claim_and_send(limit)
            except CONNECTION_ERRORS as exc:
                await self.connections.drop("claim", exc)
                await asyncio.sleep(0.05)
                continue
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bug or a bad row
                self._log.exception("worker.claim_failed", error=type(exc).__name__)
                await self.connections.drop("claim", exc)
                await asyncio.sleep(1.0)
                continue
            if len(rows) == limit:
                continue  # there is more: claim again without waiting
            try:
                # asyncio.timeout, not wait_for: no extra task between the NOTIFY and the claim.
                async with asyncio.timeout(cfg.poll_interval_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def claim_and_send(self, limit: int) -> list[ClaimedDelivery]:
        """Claim up to ``limit`` deliveries and start a send for each that may go now;
        return every row claimed.

        All of them, including those expired at claim or held back by the gate: the
        caller compares the count with ``limit`` to know whether more work is due.
        """
        conn = await self.connections.get("claim")
        rows = await store.claim(
            conn,
            worker=self.id,
            channels=self.config.channels,
            limit=limit,
            lease_seconds=self.config.lease_seconds,
            templates=self.templates,
        )
        claimed = []
        for row in rows:
            if row.status == "expired":  # the claim statement expired it: nothing to record
                self._expired_at_claim(row)
                continue
            self.leases.hold(row)
            claimed.append(row)
        try:
            held_back = await self.gate.admit(conn, claimed) if claimed else {}
        except BaseException:
            # Claimed, but nothing started: stop heartbeating them, so that lease
            # recovery returns them to pending (else they stay processing forever).
            for row in claimed:
                self.leases.forget(row.id)
            raise
        for row in claimed:
            decision = held_back.get(row.id)
            if decision is not None:
                self.recorder.results.put_nowait((row, decision))
                continue
            task = asyncio.create_task(self._send(row))
            self._sending.add(task)
            task.add_done_callback(self._free_slot)
        return rows

    async def _send(self, row: ClaimedDelivery) -> None:
        self.recorder.results.put_nowait((row, await self.sender.deliver(row)))

    def _free_slot(self, task: asyncio.Task[None]) -> None:
        """A send finished (whatever its outcome): its slot may take another delivery."""
        self._sending.discard(task)
        self._slot_free.set()

    def _expired_at_claim(self, row: ClaimedDelivery) -> None:
        self.stats["expired"] += 1
        metrics.record_result(row.channel, None, "expired")
        self._log.info(
            "delivery.expired",
            delivery_id=row.id,
            message_id=row.message_id,
            channel=row.channel,
            provider=None,
            attempt=row.attempts,
        )

    async def run_once(self, limit: int | None = None) -> int:
        """Claim one batch, send it, record the results; return how many were claimed.

        The whole loop in one call, for tests and tools (no listener, no housekeeping).
        """
        rows = await self.claim_and_send(limit or self.config.batch_size)
        if self._sending:
            await asyncio.gather(*set(self._sending))
        await self.recorder.drain()
        return len(rows)

    async def close(self) -> None:
        """Close the connections and the render threads (after run_once use; run() closes
        its own)."""
        self.sender.renderer.close()
        await self.connections.close_all()

    # -- wake-ups and housekeeping ---------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self.connections.get("listen")
                await store.listen(conn)
                # Anything committed while we were not listening is found by this claim.
                self._wake.set()
                async for notify in conn.notifies():
                    if notify.channel == store.CANCEL_CHANNEL:
                        self._cancel_requested(notify.payload)
                    else:
                        self._wake.set()
            except Exception as exc:  # noqa: BLE001 - connection loss or not, listen again
                await self.connections.drop("listen", exc)
                await asyncio.sleep(0.1)

    def _cancel_requested(self, payload: str) -> None:
        """outbox.cancel asked a notification's deliveries in flight to stop: those of them
        this worker holds and has not started sending are not sent.

        Only a hint, and best effort (a NOTIFY missed while reconnecting is missed):
        whatever happens, the database ends a delivery whose cancel was requested
        ``cancelled`` unless it was sent, when its result is recorded.
        """
        try:
            notification_id = int(payload)
        except ValueError:
            return
        for delivery_id in self.leases.cancel_requested(notification_id):
            self._log.info(
                "delivery.cancel_requested",
                delivery_id=delivery_id,
                notification_id=notification_id,
            )

    def housekeeping(self) -> list[Scheduler]:
        """The periodic tasks, by connection (built at run, so gauges set late count)."""
        cfg = self.config
        house: list[Task] = [
            # At least three heartbeats per lease, and never rarer than recovery runs.
            Heartbeat(
                self.id,
                self.leases,
                cfg.lease_seconds,
                min(cfg.recover_interval_seconds, cfg.lease_seconds / 3),
            ),
            self.lease_recovery,
            BreakerRefresh(self.breakers),
        ]
        if self.gauges is not None:
            house.append(Gauges(self.gauges))
        schedulers = [Scheduler("house", house, self.connections, logger=self._log)]
        if self.pruner is not None:
            schedulers.append(
                Scheduler(
                    "prune",
                    [Pruning(self.pruner, self.rand, self._log)],
                    self.connections,
                    close_between=True,
                    logger=self._log,
                )
            )
        return schedulers

    async def recover_leases(self, conn: store.Conn | None = None) -> Recovered:
        """Return expired leases (of dead or stalled workers) to pending; (recovered, dead,
        cancelled)."""
        return await self.lease_recovery.run_once(conn or await self.connections.get("house"))

    def _recovered(self, result: Recovered) -> None:
        self.stats["recovered"] += result.recovered
        self.stats["cancelled"] += result.cancelled
        self._wake.set()  # they are due now

    # -- shutdown ----------------------------------------------------------------------

    async def _shutdown(self, helpers: list[asyncio.Task[None]]) -> None:
        """Stop claiming; let sends finish up to the grace period; record; release the rest."""
        self._stopping = self.connections.stopping = True
        grace = self.config.shutdown_grace_seconds
        if self._sending:
            _, late = await asyncio.wait(set(self._sending), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        try:
            await asyncio.wait_for(self.recorder.results.join(), timeout=max(grace, 5.0))
        except TimeoutError:
            self._log.warning("worker.unrecorded_results", count=self.recorder.results.qsize())
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        leftovers = self.leases.leftovers()
        if leftovers:
            try:
                conn = await asyncio.wait_for(self.connections.get("record"), timeout=5)
                await store.release(conn, worker=self.id, held=leftovers)
                self.stats["released"] += len(leftovers)
            except (TimeoutError, *CONNECTION_ERRORS):
                # Their leases expire and lease recovery returns them: nothing is lost.
                self._log.warning("worker.release_failed", count=len(leftovers))
        await self.close()
        self._log.info("worker.stopped", **dict(self.stats))
