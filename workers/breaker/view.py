"""The worker's circuit breakers: a local view of ``outbox.provider_breakers``, kept in sync.

The router asks :meth:`Breakers.available` for every message, so that answer
comes from memory, never from a query. The view is kept fresh two ways:

* :meth:`Breakers.record`, once per recorded batch: the batch's provider
  results, aggregated per provider, go to the database in ONE statement
  (``breaker_record``), and its answer (the rows after the change) replaces
  those providers' views at once, so this worker's own transitions take effect
  before its next claim;
* :meth:`Breakers.refresh`, from housekeeping every ``refresh_seconds``: ONE
  statement (``breaker_refresh``) returns every row of this worker's providers
  and claims for this worker the probe of each provider whose cool-down passed.
  Other workers' transitions reach this worker within that interval.

The rules themselves are in :mod:`outbox.workers.breaker.rules` (and, identically,
in ``sql/breaker.sql``, whose two queries workers/store.py runs). This module
adds what only a worker knows: which
providers it routes to, whether it already used its one probe message, and
what its own sends answered a moment ago. A worker that sees ``failure_threshold``
transient failures in a row from a provider (or one config outcome) stops
routing to it at once (:meth:`Breakers.observe`), without waiting for its
recorder to write the batch: otherwise every send claimed meanwhile would go
to the failing provider too. The shared state has the last word: the answer
of the next ``breaker_record`` for that provider lifts this local suspension
(or one cool-down does, if that statement never comes).

Log events: ``provider.breaker_opened`` (warning), ``provider.breaker_half_open``
and ``provider.breaker_probe`` and ``provider.breaker_closed`` (info),
``provider.misconfigured`` (error: a config outcome, alert-worthy). Each
transition is logged once, by the worker whose statement caused it; every
worker exports the state it sees on ``outbox_provider_breaker_state``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from outbox import metrics
from outbox.workers import store
from outbox.workers.breaker.rules import (
    CLOSED,
    CONFIG_KINDS,
    FAILURE_KINDS,
    HALF_OPEN,
    HEALTHY_KINDS,
    OPEN,
    Breaker,
    BreakerPolicy,
    Tally,
    may_send,
    tally,
)
from outbox.workers.store import BreakerRow

log = structlog.get_logger("outbox.worker")

#: Outcome kinds the breaker counts; anything else (no provider call) is ignored.
COUNTED_KINDS = HEALTHY_KINDS | FAILURE_KINDS | CONFIG_KINDS


@dataclass(slots=True)
class _View:
    """What this worker knows of one provider's breaker."""

    breaker: Breaker
    # Monotonic time at which it may take traffic again: retry_at when open, the
    # probe claim's expiry when half-open. Kept as a local deadline computed from
    # the database's "seconds from now", so clock skew between hosts cannot matter.
    ready_at: float | None = None
    # Half-open with this worker as probe owner: the one probe message was routed.
    probe_used: bool = False


class Breakers:
    """The circuit breakers of ``providers`` as seen by ``worker``."""

    def __init__(
        self,
        policy: BreakerPolicy,
        worker: str,
        providers: Iterable[str],
        *,
        refresh_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        if refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be positive, got {refresh_seconds}")
        self.policy = policy
        self.worker = worker
        self.providers = tuple(providers)
        self.refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self._log = logger or log.bind(worker=worker)
        # Only providers that have a row: no row means closed, never failed.
        self._views: dict[str, _View] = {}
        # This worker's own consecutive transient failures per provider, as the sends
        # return, and the providers it suspended on that evidence (until a monotonic time).
        self._streak: dict[str, int] = {}
        self._suspended: dict[str, float] = {}
        for name in self.providers:
            metrics.set_breaker_state(name, CLOSED)

    # -- routing (no I/O) ---------------------------------------------------------

    def state(self, name: str) -> str:
        """The state this worker sees for provider ``name``."""
        view = self._views.get(name)
        return view.breaker.state if view is not None else CLOSED

    def available(self, name: str) -> bool:
        """Whether a message may be routed to provider ``name`` now (the Router's ``available``)."""
        until = self._suspended.get(name)
        if until is not None:
            if self._monotonic() < until:
                return False
            del self._suspended[name]
        view = self._views.get(name)
        if view is None:
            return True
        return may_send(view.breaker, self.worker) and not view.probe_used

    def observe(self, name: str, kind: str) -> None:
        """A send through ``name`` just returned an outcome of ``kind``.

        Enough evidence from this worker alone suspends the provider here at once;
        the shared breaker follows when the recorder writes the batch.
        """
        if name not in self.providers:
            return
        if kind in HEALTHY_KINDS:
            self._streak[name] = 0
            return
        if kind in FAILURE_KINDS:
            self._streak[name] = self._streak.get(name, 0) + 1
            if self._streak[name] < self.policy.failure_threshold:
                return
        elif kind not in CONFIG_KINDS:
            return
        self._suspended[name] = self._monotonic() + self.policy.cooldown_seconds

    def sending(self, name: str) -> None:
        """Provider ``name`` was chosen for a message: if that is our probe, it is used up."""
        view = self._views.get(name)
        if (
            view is None
            or view.breaker.state != HALF_OPEN
            or view.breaker.probe_owner != self.worker
        ):
            return
        if not view.probe_used:
            view.probe_used = True
            self._log.info("provider.breaker_probe", provider=name, trips=view.breaker.trips)

    def wait_seconds(self, names: Sequence[str]) -> float:
        """Seconds until one of ``names`` may take traffic again, as far as this worker knows.

        Never less than the refresh interval: sooner, this worker could not know yet.
        """
        floor = self.refresh_seconds
        now = self._monotonic()
        waits = []
        for name in names:
            view = self._views.get(name)
            if view is None or self.available(name):
                return floor
            if view.breaker.state == HALF_OPEN and view.breaker.probe_owner == self.worker:
                # Our own probe is in flight: its result decides within one provider call.
                waits.append(floor)
            elif view.ready_at is not None:
                waits.append(view.ready_at - now)
            else:
                waits.append(self.policy.probe_seconds)
        return max(min(waits, default=floor), floor)

    # -- the database ---------------------------------------------------------------

    async def refresh(self, conn: store.Conn) -> None:
        """Read every breaker of our providers, claiming the probes that are due for us.

        Housekeeping calls it every ``refresh_seconds`` (workers/housekeeping.py).
        """
        if not self.providers:
            return
        rows = await store.breaker_refresh(
            conn,
            worker=self.worker,
            providers=self.providers,
            probe_seconds=self.policy.probe_seconds,
        )
        seen = set()
        for row in rows:
            seen.add(row.provider)
            self._apply(row, claimed=row.claimed)
            if row.claimed:
                self._log.info(
                    "provider.breaker_half_open",
                    provider=row.provider,
                    trips=row.trips,
                    reason=row.reason,
                    probe_seconds=self.policy.probe_seconds,
                )
        # A row a DBA deleted is a closed breaker.
        for name in set(self._views) - seen:
            del self._views[name]
            metrics.set_breaker_state(name, CLOSED)

    async def record(
        self,
        conn: store.Conn,
        results: Iterable[tuple[str | None, str | None, str | None]],
    ) -> None:
        """Apply one recorded batch's (provider, outcome kind, reason) results, in finishing order.

        One statement for the whole batch, and none when it cannot change anything
        (only successes for providers this worker sees closed with no failures).
        """
        by_provider: dict[str, list[tuple[str, str | None]]] = {}
        for provider, kind, reason in results:
            if provider is None or kind is None:
                continue  # no provider call (a template error, a deferral)
            if provider in self.providers and kind in COUNTED_KINDS:
                by_provider.setdefault(provider, []).append((kind, reason))
        if not by_provider:
            return
        tallies = {name: tally(found) for name, found in sorted(by_provider.items())}
        for name, t in tallies.items():
            if t.configs:
                self._alert_config(name, t)
        if all(not t.failed and self._quiet(name) for name, t in tallies.items()):
            return
        names = list(tallies)
        rows = await store.breaker_record(
            conn,
            worker=self.worker,
            providers=names,
            successes=[tallies[n].successes for n in names],
            failures=[tallies[n].failures for n in names],
            configs=[tallies[n].configs for n in names],
            reasons=[tallies[n].reason for n in names],
            threshold=self.policy.failure_threshold,
            cooldown_seconds=self.policy.cooldown_seconds,
            cooldown_cap_seconds=self.policy.cooldown_cap_seconds,
        )
        for row in rows:
            self._apply(row, claimed=False)
            self._log_transition(row)
            # The shared state has now seen this worker's evidence: it decides.
            self._suspended.pop(row.provider, None)
            if row.state == CLOSED and row.failures == 0:
                self._streak[row.provider] = 0

    # -- helpers ----------------------------------------------------------------------

    def _quiet(self, name: str) -> bool:
        """Closed with no failures counted: a success changes nothing in the database.

        (The count this worker sees may be up to one refresh old; a success another
        worker's failures missed is caught by the next batch that has a failure.)
        """
        view = self._views.get(name)
        return view is None or (view.breaker.state == CLOSED and view.breaker.failures == 0)

    def _apply(self, row: BreakerRow, *, claimed: bool) -> None:
        name = row.provider
        breaker = Breaker(
            state=row.state,
            failures=row.failures,
            trips=row.trips,
            reason=row.reason,
            probe_owner=row.probe_owner,
        )
        wait = row.retry_in_seconds
        ready_at = self._monotonic() + max(float(wait), 0.0) if wait is not None else None
        old = self._views.get(name)
        # The same probe claim as before keeps its "used" mark; a new claim starts unused.
        probe_used = (
            old is not None
            and not claimed
            and old.breaker.state == HALF_OPEN
            and breaker.state == HALF_OPEN
            and old.breaker.probe_owner == breaker.probe_owner
            and old.probe_used
        )
        self._views[name] = _View(breaker, ready_at, probe_used=probe_used)
        metrics.set_breaker_state(name, breaker.state)

    def _log_transition(self, row: BreakerRow) -> None:
        previous, state, name = row.previous, row.state, row.provider
        if previous == state:
            return
        if state == OPEN:
            self._log.warning(
                "provider.breaker_opened",
                provider=name,
                previous=previous,
                reason=row.reason,
                failures=row.failures,
                trips=row.trips,
                retry_in_seconds=round(float(row.retry_in_seconds or 0), 3),
            )
        elif state == CLOSED:
            self._log.info("provider.breaker_closed", provider=name, previous=previous)

    def _alert_config(self, name: str, t: Tally) -> None:
        """A config outcome: credentials or account setup are broken. Only a person can fix it."""
        metrics.record_config_error(name, t.configs)
        self._log.error(
            "provider.misconfigured",
            provider=name,
            count=t.configs,
            reason=t.reason,
            action="check this provider's credentials and account; its circuit breaker "
            "is open and traffic goes to the next provider of the channel",
        )
