"""``/healthz``'s schema check: the database answers, at the revision this Outbox needs.

A receiver whose database answers but holds no outbox schema (an empty embedded
cluster started in the wrong directory), or one at another release's revision,
would tell a load balancer it is fine and then fail every genuine receipt. So
the probe runs :func:`outbox.migrate.check`, the check every Outbox process runs
at start-up, and answers 503 with its message otherwise.

That check opens a connection of its own and runs a query, so its answer is
kept for ``ttl_s``: a probe every second costs one check per ``ttl_s``, and a
schema change is seen within that time.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo

from outbox.errors import SchemaError
from outbox.migrate import check

# How long a check's answer stands, and how long one may take (connect included).
HEALTH_CACHE_S = 5.0
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Health:
    """One check's answer: ``status`` is "ok" or what is wrong, ``reason`` says more."""

    status: str
    reason: str | None = None
    schema: str | None = None  # the revision, when it could be read

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SchemaCheck:
    """:func:`outbox.migrate.check` against ``url``, its answer cached for ``ttl_s``."""

    def __init__(
        self, url: str, ttl_s: float = HEALTH_CACHE_S, timeout_s: float = CHECK_TIMEOUT_S
    ) -> None:
        # A server that does not answer must not hold the probe past timeout_s;
        # libpq takes whole seconds, and at least 2.
        self.url = make_conninfo(url, connect_timeout=max(2, math.ceil(timeout_s)))
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._answer = Health("not checked yet")
        self._checked_at = -math.inf
        # Concurrent probes wait for the one check in progress instead of each
        # starting their own.
        self._lock = asyncio.Lock()

    async def health(self, now: float) -> Health:
        """The cached answer if younger than ``ttl_s`` at ``now`` (monotonic s), else a new one."""
        async with self._lock:
            if now - self._checked_at >= self.ttl_s:
                self._answer = await self._check()
                self._checked_at = now
            return self._answer

    async def _check(self) -> Health:
        try:
            # migrate.check is synchronous (psycopg, not its async twin): a thread,
            # so that the receipts being served meanwhile do not wait for it.
            revision = await asyncio.wait_for(asyncio.to_thread(check, self.url), self.timeout_s)
        except SchemaError as exc:
            return Health("schema not ready", str(exc), exc.current)
        except (psycopg.OperationalError, TimeoutError) as exc:
            # The error's type only: libpq's message names hosts and, for some
            # failures, the user; the service's log has the details.
            return Health("database unavailable", type(exc).__name__)
        return Health("ok", schema=revision)
