"""The worker: wait -> claim -> send -> record, until told to stop.

One asyncio process, four connections, each with one job:

* the claim loop: claims a batch (one statement, committed before any provider
  call), starts a send task per delivery, and claims again at once while there
  is work and free send slots; when the queue is empty it waits for a NOTIFY, the
  poll interval, or stop;
* the listener: LISTEN outbox_work, sets the wake-up event on each notification;
* the recorder: takes finished results from a queue and records them in batches,
  fenced by lease owner and attempt;
* housekeeping: heartbeats the leases of sends in flight, returns the expired
  leases of dead workers to pending, and refreshes this worker's view of the
  providers' circuit breakers (workers/breaker/view.py) every ~1 s.

A dropped connection is reopened with backoff by whichever loop noticed it;
nothing in memory is lost meanwhile: results wait in the queue, and rows whose
results never get recorded come back through lease recovery (counted in doubt).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from outbox import metrics
from outbox.channel_limits import check_limits
from outbox.ops import Pruner
from outbox.providers.base import Message, Outcome
from outbox.providers.router import Router
from outbox.templates import TemplateError, TemplateVersion, render
from outbox.workers import store
from outbox.workers.breaker import Breakers
from outbox.workers.config import WorkerConfig
from outbox.workers.gate import Gate
from outbox.workers.decide import Decision, RetryPolicy, decide, deferred, failed_before_sending

log = structlog.get_logger("outbox.worker")

# Template versions kept by id (each compiles once; see outbox/templates.py's cache).
TEMPLATE_CACHE_SIZE = 1024

# Errors after which a connection is thrown away and reopened.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(slots=True)
class Held:
    """A delivery this worker claimed and has not recorded yet."""

    attempt: int
    # True once the provider call began: if it is interrupted, the provider may
    # have the message, so releasing it counts the attempt as in doubt.
    started: bool = False


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    def __init__(
        self,
        url: str,
        router: Router,
        config: WorkerConfig,
        *,
        worker_id: str | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        gate: Gate | None = None,
        gauges: metrics.QueueGauges | None = None,
        pruner: Pruner | None = None,
    ) -> None:
        self.url = url
        self.router = router
        self.config = config
        self.id = worker_id or default_worker_id()
        self.rand = rand
        self.clock = clock
        self.policy = RetryPolicy(config.backoff_base_seconds, config.backoff_cap_seconds,
                                  config.config_pause_seconds)
        self.gate = gate or Gate(clock, router, default_quiet=config.default_quiet_hours)
        # Periodic extras of housekeeping, off unless given: queue gauges (when metrics
        # are served) and retention (when prune_older_than is set).
        self.gauges = gauges
        self.pruner = pruner
        self.stats: Counter[str] = Counter()
        self._held: dict[int, Held] = {}
        self._templates: dict[int, TemplateVersion] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._results: asyncio.Queue[tuple[dict[str, Any], Decision]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._conns: dict[str, psycopg.AsyncConnection | None] = {
            "claim": None, "record": None, "house": None, "listen": None, "prune": None}
        self._log = log.bind(worker=self.id)
        # The providers' circuit breakers, shared through PostgreSQL: the router asks
        # them (from memory) which providers may take traffic.
        self.breakers = Breakers(config.breaker_policy(), self.id, router.providers,
                                 refresh_seconds=config.breaker_refresh_seconds, logger=self._log)
        router.available = self.breakers.available

    # -- connections ---------------------------------------------------------------

    async def _conn(self, role: str) -> psycopg.AsyncConnection:
        """The connection for ``role``, reopened with backoff if it was lost."""
        conn = self._conns[role]
        if conn is not None and not conn.closed:
            return conn
        delay = 0.05
        while True:
            try:
                conn = await store.connect(self.url, f"outbox-worker {role} {self.id}")
                self._conns[role] = conn
                return conn
            except CONNECTION_ERRORS as exc:
                self.stats["db_connect_failures"] += 1
                self._log.warning("db.unavailable", role=role, error=type(exc).__name__, retry_in=delay)
                if self._stopping and role == "claim":
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _drop(self, role: str, exc: BaseException) -> None:
        self._log.warning("db.connection_lost", role=role, error=type(exc).__name__)
        conn, self._conns[role] = self._conns[role], None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - it is already broken; closing is best effort
                pass

    # -- the loop ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set, then shut down gracefully."""
        stop = stop or asyncio.Event()
        self._log.info("worker.started", channels=list(self.config.channels),
                       concurrency=self.config.concurrency, batch_size=self.config.batch_size)
        helpers = [asyncio.create_task(self._listen(), name="listen"),
                   asyncio.create_task(self._record_loop(), name="record"),
                   asyncio.create_task(self._housekeeping(), name="housekeeping")]
        if self.pruner is not None:
            helpers.append(asyncio.create_task(self._prune_loop(), name="prune"))
        stopper = asyncio.create_task(self._wait_stop(stop), name="stop")
        try:
            await self._claim_loop()
        finally:
            stopper.cancel()
            await self._shutdown(helpers)

    async def _wait_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
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
            if (free <= 0 or self._results.qsize() >= cfg.concurrency
                    or (self._sending and free < min(cfg.batch_size, cfg.concurrency) // 2)):
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            limit = min(cfg.batch_size, free)
            self._wake.clear()
            try:
                rows = await self.claim(limit)
            except CONNECTION_ERRORS as exc:
                await self._drop("claim", exc)
                await asyncio.sleep(0.05)
                continue
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bug or a bad row
                self._log.exception("worker.claim_failed", error=type(exc).__name__)
                await self._drop("claim", exc)
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

    async def claim(self, limit: int) -> list[dict[str, Any]]:
        """Claim up to ``limit`` deliveries and start sending them; return every row claimed.

        All of them, including those expired at claim or held back by the gate: the
        caller compares the count with ``limit`` to know whether more work is due.
        """
        conn = await self._conn("claim")
        rows = await store.claim(conn, worker=self.id, channels=self.config.channels, limit=limit,
                                 lease_seconds=self.config.lease_seconds)
        claimed = []
        for row in rows:
            if row["status"] == "expired":
                self.stats["expired"] += 1
                metrics.record_result(row["channel"], None, "expired")
                self._log.info("delivery.expired", delivery_id=row["id"], message_id=row["message_id"],
                               channel=row["channel"], provider=None, attempt=row["attempts"])
                continue
            self._held[row["id"]] = Held(row["attempts"])
            claimed.append(row)
        try:
            held_back = await self.gate.admit(conn, claimed) if claimed else {}
        except BaseException:
            # Claimed, but nothing started: stop heartbeating them, so that lease
            # recovery returns them to pending (else they stay processing forever).
            for row in claimed:
                self._held.pop(row["id"], None)
            raise
        started = []
        for row in claimed:
            if row["id"] in held_back:
                self._results.put_nowait((row, held_back[row["id"]]))
                continue
            task = asyncio.create_task(self._deliver(row))
            self._sending.add(task)
            task.add_done_callback(self._sent)
            started.append(row)
        return rows

    async def run_once(self, limit: int | None = None) -> int:
        """Claim one batch, send it, record the results; return how many were claimed.

        The whole loop in one call, for tests and tools (no listener, no housekeeping).
        """
        rows = await self.claim(limit or self.config.batch_size)
        if self._sending:
            await asyncio.gather(*set(self._sending))
        batch = []
        while not self._results.empty():
            batch.append(self._results.get_nowait())
            self._results.task_done()
        if batch:
            await self._record(batch)
        return len(rows)

    async def close(self) -> None:
        """Close the connections (after run_once use; run() closes its own)."""
        for role, conn in list(self._conns.items()):
            if conn is not None:
                await conn.close()
            self._conns[role] = None

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slot_free.set()

    # -- one delivery ----------------------------------------------------------------

    async def _deliver(self, row: dict[str, Any]) -> None:
        try:
            decision = await self._attempt(row)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the delivery
            self._log.exception("delivery.worker_error", delivery_id=row["id"], message_id=row["message_id"],
                                channel=row["channel"], provider=None, attempt=row["attempts"])
            decision = self._decide(row, "worker", Outcome.unknown(f"worker error: {type(exc).__name__}"))
        self._results.put_nowait((row, decision))

    async def _attempt(self, row: dict[str, Any]) -> Decision:
        if row["template_id"] is None:
            return failed_before_sending(
                f"no active version of template {row['template_key']!r} for {row['channel']} "
                f"(locale {row['locale']})", template=row["template_key"])
        template = self._template(row)
        try:
            rendered = render(template, row["data"])
            check_limits(row["channel"], rendered, row["data"], template=template,
                         max_sms_segments=self.config.max_sms_segments)
        except TemplateError as exc:
            return failed_before_sending(str(exc), template=template.key, version=template.version)

        message = Message(
            delivery_id=row["id"], notification_id=row["notification_id"], message_id=row["message_id"],
            channel=row["channel"], destination=row["destination"], attempt=row["attempts"],
            priority=row["priority"], body=rendered.body, subject=rendered.subject,
            html_body=rendered.html_body, title=rendered.title, data=row["data"],
            expires_at=row["expires_at"], device_platform=row["device_platform"],
            device_environment=row["device_environment"])
        if row["expires_at"] is not None and self.clock() >= row["expires_at"]:
            # Claimed in time, but rendering or the gate took it past its expiry: never send late.
            return Decision("expired", "expired", error="expired before it could be sent")
        provider = self.router.choose(message)
        if provider is None:
            return self._no_provider(row, message)
        self.breakers.sending(provider.name)
        self._held[row["id"]].started = True
        began, kind = time.perf_counter(), "error"
        try:
            outcome = await provider.send(message)
            kind = outcome.kind.value
            self.breakers.observe(provider.name, kind)
        finally:
            metrics.observe_provider_call(provider.name, kind, time.perf_counter() - began)
        return self._decide(row, provider.name, outcome)

    def _template(self, row: dict[str, Any]) -> TemplateVersion:
        """The row's template version; one object per version, so its compiled form is found at once."""
        template = self._templates.get(row["template_id"])
        # Versions are immutable, but a process can outlive a database (tests recreate them).
        if template is None or template.content_hash != row["content_hash"]:
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._templates.clear()
            template = self._templates[row["template_id"]] = TemplateVersion(
                id=row["template_id"], key=row["template_key"], channel=row["channel"],
                locale=row["template_locale"], version=row["template_version"], subject=row["subject"],
                body=row["body"], html_body=row["html_body"], title=row["title"],
                content_hash=row["content_hash"])
        return template

    def _no_provider(self, row: dict[str, Any], message: Message) -> Decision:
        """Every provider that could send ``message`` has its breaker open: wait, attempt refunded."""
        names = [p.name for p in self.router.candidates(message)]
        if not names:
            # Nothing is configured for it at all (e.g. a device platform not listed):
            # a configuration problem, paused like one.
            return self._decide(row, "router", Outcome.config(
                f"no provider configured for {row['channel']}"
                + (f" on {row['device_platform']}" if row["device_platform"] else "")))
        # Until the first of them may take traffic again, spread by up to 10% so
        # that a backlog deferred together does not all come back in the same second.
        delay = self.breakers.wait_seconds(names) * (1.0 + 0.1 * self.rand())
        if row["expires_at"] is not None and self.clock() + timedelta(seconds=delay) >= row["expires_at"]:
            return Decision("expired", "expired",
                            error=f"expires while every provider is unavailable: {', '.join(names)}")
        return deferred(delay, "provider unavailable (circuit breaker open)", providers=names)

    def _decide(self, row: dict[str, Any], provider: str, outcome: Outcome) -> Decision:
        return decide(outcome, provider=provider, attempt=row["attempts"],
                      max_attempts=row["max_attempts"], expires_at=row["expires_at"],
                      now=self.clock(), rand=self.rand(), policy=self.policy)

    # -- recording -------------------------------------------------------------------

    async def _record_loop(self) -> None:
        while True:
            batch = [await self._results.get()]
            while len(batch) < self.config.batch_size and not self._results.empty():
                batch.append(self._results.get_nowait())
            await self._record(batch)
            for _ in batch:
                self._results.task_done()
            self._slot_free.set()  # the claim loop may be waiting for the recorder

    async def _record(self, batch: list[tuple[dict[str, Any], Decision]]) -> None:
        """Record ``batch``, retrying through connection loss until it is written.

        Any other error (a bug, a value the database refuses) must not stop the
        recorder: the batch is retried row by row, and a row that still fails is
        left to lease recovery, which returns it to pending (nothing is lost).
        """
        results = [(row["id"], row["attempts"], d, row["template_id"]) for row, d in batch]
        recorded: set[int] = set()
        while True:
            try:
                conn = await self._conn("record")
                recorded = await store.record(conn, worker=self.id, results=results)
                await self._retire_destinations(conn, batch)
                break
            except CONNECTION_ERRORS as exc:
                await self._drop("record", exc)
                await asyncio.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                self._log.exception("delivery.record_failed", count=len(batch), error=type(exc).__name__)
                if len(batch) == 1:
                    self._held.pop(batch[0][0]["id"], None)
                    return
                for one in batch:
                    await self._record([one])
                return
        await self._update_breakers(batch)
        for row, decision in batch:
            self._held.pop(row["id"], None)
            if row["id"] not in recorded:
                # Fenced: our lease expired and the row was recovered (maybe re-claimed).
                self.stats["fenced"] += 1
                metrics.record_fenced(row["channel"], decision.provider)
                self._log.warning("delivery.result_dropped", delivery_id=row["id"],
                                  message_id=row["message_id"], channel=row["channel"],
                                  provider=decision.provider, attempt=row["attempts"],
                                  status=decision.status,
                                  reason="lease no longer held")
                continue
            self.stats[decision.kind] += 1
            due_since = row.get("due_since")
            metrics.record_result(row["channel"], decision.provider, decision.kind,
                                  (self.clock() - due_since).total_seconds() if due_since else None)
            level = "debug" if decision.kind == "sent" else "info"
            getattr(self._log, level)(
                f"delivery.{decision.kind}", delivery_id=row["id"], message_id=row["message_id"],
                channel=row["channel"], provider=decision.provider, attempt=row["attempts"],
                error=decision.error)

    async def _update_breakers(self, batch: list[tuple[dict[str, Any], Decision]]) -> None:
        """Feed the batch's provider results to the circuit breakers: one statement at most.

        Every result counts, fenced ones included: the provider's answer was real.
        Best effort: a breaker update lost to an error only delays a transition to
        the next batch, so it must never hold up or undo the recording itself.
        """
        conn = self._conns["record"]
        if conn is None or conn.closed:
            return
        results = [(d.provider, d.detail.get("outcome"), d.error) for _, d in batch if d.provider]
        try:
            await self.breakers.record(conn, results)
        except CONNECTION_ERRORS as exc:
            await self._drop("record", exc)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self._log.exception("breaker.update_failed", count=len(results), error=type(exc).__name__)

    async def _retire_destinations(self, conn: psycopg.AsyncConnection,
                                   batch: list[tuple[dict[str, Any], Decision]]) -> None:
        dead = [(row, d) for row, d in batch if d.dead_destination]
        if not dead:
            return
        tokens = [(row["destination"], d.error or "dead token") for row, d in dead if row["channel"] == "push"]
        addresses = [(row["channel"], row["destination"], d.error or "dead destination")
                     for row, d in dead if row["channel"] != "push"]
        await store.retire_destinations(conn, worker=self.id, tokens=tokens, addresses=addresses)
        for token, reason in tokens:
            self._log.info("device.deactivated", token_suffix=token[-6:], reason=reason)

    # -- wake-ups and housekeeping ---------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self._conn("listen")
                await store.listen(conn)
                # Anything committed while we were not listening is found by this claim.
                self._wake.set()
                async for _ in conn.notifies():
                    self._wake.set()
            except Exception as exc:  # noqa: BLE001 - connection loss or not, listen again
                await self._drop("listen", exc)
                await asyncio.sleep(0.1)

    async def _housekeeping(self) -> None:
        cfg = self.config
        tick = min(cfg.recover_interval_seconds, cfg.lease_seconds / 3)
        loop = asyncio.get_running_loop()
        next_recovery = next_heartbeat = loop.time()
        while True:
            try:
                conn = await self._conn("house")
                in_flight = [i for i, h in self._held.items()]
                if in_flight and loop.time() >= next_heartbeat:
                    next_heartbeat = loop.time() + tick
                    await store.heartbeat(conn, worker=self.id, ids=in_flight,
                                          lease_seconds=cfg.lease_seconds)
                if loop.time() >= next_recovery:
                    next_recovery = loop.time() + cfg.recover_interval_seconds
                    await self.recover_leases(conn)
                if self.gauges is not None:
                    await self.gauges.tick(conn)
                await self.breakers.tick(conn)
            except CONNECTION_ERRORS as exc:
                await self._drop("house", exc)
            except Exception as exc:  # noqa: BLE001 - housekeeping must keep running
                self._log.exception("worker.housekeeping_failed", error=type(exc).__name__)
                await self._drop("house", exc)
            # Woken as often as the breakers refresh (~1 s); each task keeps its own pace.
            await asyncio.sleep(min(tick, self.breakers.refresh_seconds))

    async def recover_leases(self, conn: psycopg.AsyncConnection | None = None) -> tuple[int, int]:
        """Return expired leases (of dead or stalled workers) to pending; (recovered, dead)."""
        conn = conn or await self._conn("house")
        recovered, dead = await store.recover_leases(conn, worker=self.id)
        if recovered or dead:
            self.stats["recovered"] += recovered
            self._log.info("leases.recovered", recovered=recovered, dead=dead)
            self._wake.set()
        return recovered, dead

    async def _prune_loop(self) -> None:
        """Retention, every pruner interval, on a connection of its own.

        Not in housekeeping: a long prune must never delay the lease heartbeats.
        The pruner takes an advisory lock, so at most one worker prunes at a time;
        the connection is closed between runs rather than held idle.
        """
        assert self.pruner is not None
        while True:
            # Jittered, so that workers started together do not all try at once.
            await asyncio.sleep(self.pruner.interval_seconds * (0.5 + self.rand()))
            try:
                await self.pruner.run_once(await self._conn("prune"), log=self._log)
            except CONNECTION_ERRORS as exc:
                await self._drop("prune", exc)
                continue
            except psycopg.Error as exc:  # e.g. a statement timeout: try again next time
                self._log.warning("retention.failed", error=type(exc).__name__, detail=str(exc))
            conn, self._conns["prune"] = self._conns["prune"], None
            if conn is not None:
                await conn.close()

    # -- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self, helpers: list[asyncio.Task[None]]) -> None:
        """Stop claiming; let sends finish up to the grace period; record; release the rest."""
        self._stopping = True
        grace = self.config.shutdown_grace_seconds
        if self._sending:
            _, late = await asyncio.wait(set(self._sending), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        try:
            await asyncio.wait_for(self._results.join(), timeout=max(grace, 5.0))
        except TimeoutError:
            self._log.warning("worker.unrecorded_results", count=self._results.qsize())
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        leftovers = [(i, h.attempt, h.started) for i, h in self._held.items()]
        if leftovers:
            try:
                conn = await asyncio.wait_for(self._conn("record"), timeout=5)
                await store.release(conn, worker=self.id, held=leftovers)
                self.stats["released"] += len(leftovers)
            except (TimeoutError, *CONNECTION_ERRORS):
                # Their leases expire and lease recovery returns them: nothing is lost.
                self._log.warning("worker.release_failed", count=len(leftovers))
        await self.close()
        self._log.info("worker.stopped", **dict(self.stats))
