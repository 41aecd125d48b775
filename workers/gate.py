"""Admission: which claimed deliveries may be sent now, and which must wait.

The worker asks once per claimed batch (so a check that needs the database
costs one round trip per batch, not per delivery). A delivery that may not go
now gets a ``deferred`` decision: back to pending at the time it may go, the
attempt not counted, never dropped.

Rules: quiet hours of the recipient (critical categories bypass them); expiry
still wins (a delivery whose window would only open after it expires is
expired instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from outbox.schedule import quiet_until
from workers.decide import Decision, deferred


class Gate:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    async def admit(
        self, conn: psycopg.AsyncConnection, rows: Sequence[dict[str, Any]],
    ) -> dict[int, Decision]:
        """Decisions for the rows that may not be sent now, by delivery id; the rest may go."""
        now = self.clock()
        held: dict[int, Decision] = {}
        for row in rows:
            decision = self._quiet_hours(row, now)
            if decision is not None:
                held[row["id"]] = decision
        return held

    @staticmethod
    def _quiet_hours(row: dict[str, Any], now: datetime) -> Decision | None:
        if row["critical"] or row["quiet_start"] is None or row["timezone"] is None:
            return None
        until = quiet_until(now, row["timezone"], row["quiet_start"], row["quiet_end"])
        if until is None:
            return None
        if row["expires_at"] is not None and until >= row["expires_at"]:
            return Decision("expired", "expired", error="expires before the recipient's quiet hours end")
        return deferred((until - now).total_seconds(), "quiet hours", until=until.isoformat())
