"""Admission: which claimed deliveries may be sent now, and which must wait or not go at all.

The worker asks once per claimed batch. A delivery that may not go now gets a
decision the worker records instead of sending it:

1. Blocked since enqueue (the claim statement checks it, so it costs no round
   trip of its own, sql/queries/worker.sql): an opt-out (critical categories
   bypass it), an address suppressed (hard bounce, STOP), a push device
   deactivated: ``suppressed`` with the reason, the attempt not counted.
2. Quiet hours of the recipient, in their time zone (checked here, in Python,
   with the worker's clock): ``deferred`` to the end of the window. Critical
   categories bypass them.
3. Rate limits, token buckets shared by every worker, one round trip for the
   batch (``store.admit``), and only when the claim said a configured limit
   applies to it: the provider that will send (per-provider cap) and the
   recipient on this channel (per-person cap). Over the limit: ``deferred`` to
   when a token will be free, the attempt not counted, never dropped.

The rate-limit rules are not in Python: they are the SQL functions
``outbox.admit`` (sql/admit.sql: which buckets a delivery takes from, in what
order) and ``outbox.take_tokens`` (sql/ratelimit.sql: refill, take, how long to
wait), called by the ``admit`` query of sql/queries/gate.sql. The Python token
bucket in tests/ratelimit_model.py is only the tests' reference model of them.

Expiry still wins: a delivery that could only go after it expires is expired
(``decide.deferred_unless_expired``).

Deferrals are measured against two clocks on purpose: quiet hours against the
worker's (injectable) clock, because they are about the recipient's wall time;
token buckets against the database's clock, because every worker on every host
shares them and the database is the one clock they all see.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from datetime import time as dt_time

from outbox.providers.router import Router
from outbox.schedule import quiet_until
from outbox.workers import store
from outbox.workers.decide import Decision, deferred_unless_expired
from outbox.workers.delivery import ClaimedDelivery

# Full buckets are deleted now and then (a full bucket is the same as none), so the
# table keeps one row per recently limited person rather than per person ever seen.
PRUNE_EVERY_SECONDS = 60.0
PRUNE_ROWS = 1000


class Gate:
    """Decides, once per claimed batch, which deliveries must not be sent now.

    ``router`` names the provider each delivery will go through, for the
    per-provider limits; without one only per-recipient limits apply.
    """

    def __init__(
        self,
        clock: Callable[[], datetime],
        router: Router | None = None,
        *,
        prune_every_seconds: float = PRUNE_EVERY_SECONDS,
        prune_rows: int = PRUNE_ROWS,
        monotonic: Callable[[], float] = time.monotonic,
        default_quiet: tuple[dt_time, dt_time] | None = None,
    ) -> None:
        self.clock = clock
        # Quiet hours for recipients who have none of their own (in their time zone).
        self.default_quiet = default_quiet
        self.router = router
        self.prune_every_seconds = prune_every_seconds
        self.prune_rows = prune_rows
        self._monotonic = monotonic
        # The first batch prunes: a worker that starts after a long pause finds the
        # most full buckets.
        self._next_prune = monotonic()

    async def admit(
        self,
        conn: store.Conn,
        rows: Sequence[ClaimedDelivery],
    ) -> dict[int, Decision]:
        """Decisions for the rows that may not be sent now, by delivery id; the rest may go.

        ``rows`` are the claim's rows, in claim (priority) order: when a bucket
        runs short within the batch, the earlier rows get its tokens.
        """
        now = self.clock()
        held: dict[int, Decision] = {}
        limited: list[ClaimedDelivery] = []
        providers: list[str | None] = []
        for row in rows:
            decision = self._blocked(row) or self._quiet_hours(row, now)
            if decision is not None:
                held[row.id] = decision
            elif row.limited_channels or row.limited_providers:
                provider = self._provider(row)
                if self._limit_applies(row, provider):
                    limited.append(row)
                    providers.append(provider)
        if limited:
            held.update(await self._take_tokens(conn, limited, providers, now))
        return held

    @staticmethod
    def _blocked(row: ClaimedDelivery) -> Decision | None:
        reason = row.blocked
        if reason is None:
            return None
        # Nothing was attempted: the attempt the claim counted is given back.
        return Decision(
            "suppressed",
            "suppressed",
            error=reason,
            refund=1,
            detail={"reason": reason, "checked": "at send"},
        )

    @staticmethod
    def _limit_applies(row: ClaimedDelivery, provider: str | None) -> bool:
        """A limit is configured for the row's channel (per recipient) or its provider."""
        return row.channel in (row.limited_channels or ()) or provider in (
            row.limited_providers or ()
        )

    def _quiet_hours(self, row: ClaimedDelivery, now: datetime) -> Decision | None:
        # A direct address has no recipient, hence no known time zone: never held.
        if row.critical or row.timezone is None:
            return None
        if row.quiet_start is not None and row.quiet_end is not None:
            start, end = row.quiet_start, row.quiet_end
        elif self.default_quiet is not None:
            start, end = self.default_quiet
        else:
            return None
        until = quiet_until(now, row.timezone, start, end)
        if until is None:
            return None
        return deferred_unless_expired(
            row.expires_at,
            now,
            (until - now).total_seconds(),
            "quiet hours",
            "expires before the recipient's quiet hours end",
            until=until.isoformat(),
        )

    async def _take_tokens(
        self,
        conn: store.Conn,
        limited: Sequence[ClaimedDelivery],
        providers: Sequence[str | None],
        now: datetime,
    ) -> dict[int, Decision]:
        """Rate-limit tokens for the rows (sent through ``providers``): one statement;
        the rows that must wait."""
        prune_rows = 0
        if self._monotonic() >= self._next_prune:
            prune_rows = self.prune_rows
            self._next_prune = self._monotonic() + self.prune_every_seconds
        by_id = {row.id: row for row in limited}
        verdicts = await store.admit(
            conn, deliveries=limited, providers=providers, prune_limit=prune_rows
        )
        return {
            v.id: deferred_unless_expired(
                by_id[v.id].expires_at,
                now,
                v.wait_seconds,
                "rate limit",
                f"expires before a rate-limit token of {v.limited_by} is free",
                limit=v.limited_by,
            )
            for v in verdicts
        }

    def _provider(self, row: ClaimedDelivery) -> str | None:
        if self.router is None:
            return None
        return self.router.provider_for(row.channel, row.device_platform)
