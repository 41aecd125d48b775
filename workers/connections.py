"""The worker's connections, one per role, each reopened with backoff when lost.

Roles: ``claim`` (the claim loop), ``start`` (the sends' start marks,
workers/starts.py), ``record`` (the recorder), ``house``
(housekeeping), ``listen`` (LISTEN outbox_work) and ``prune`` (retention, open
only while it runs). One connection per role, so a slow statement of one loop
never queues behind another's, and ``pg_stat_activity`` shows which is which
(``application_name = 'outbox-worker <role> <worker id>'``).

Nothing in memory is lost while a connection is down: results wait in the
recorder's queue, and rows whose results never get recorded come back through
lease recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from outbox.workers import store

# Errors after which a connection is thrown away and reopened.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

ROLES = ("claim", "start", "record", "house", "listen", "prune")

# The roles whose statements run for every batch: prepared at their first
# execution, with the plan they keep from the start (store.connect).
BATCH_ROLES = ("claim", "start", "record")

# Reconnect backoff: from the first retry to the longest wait between two.
FIRST_RETRY_SECONDS = 0.05
MAX_RETRY_SECONDS = 2.0


def describe_server(url: str) -> dict[str, str]:
    """host, port and database of ``url``, for a log line; never the user's password.

    Works for URLs and key=value strings; what the string leaves out is libpq's
    default, shown as such.
    """
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return {"host": "(unparsable database URL)"}
    return {
        "host": str(info.get("host") or info.get("hostaddr") or "(default socket)"),
        "port": str(info.get("port") or "(default)"),
        "database": str(info.get("dbname") or "(default)"),
    }


class Connections:
    """The connections of worker ``worker_id`` to ``url``, by role."""

    def __init__(self, url: str, worker_id: str, stats: Counter[str], log: Any) -> None:
        self.url = url
        self.worker_id = worker_id
        self._stats = stats
        self._log = log
        self._conns: dict[str, store.Conn | None] = dict.fromkeys(ROLES)
        # One opening at a time per role: a role's loop and the start-up's warm-up
        # (open) may ask at once, and must get the same connection.
        self._opening = {role: asyncio.Lock() for role in ROLES}
        # Set once the worker is shutting down: the claim role then gives up
        # instead of retrying, so shutdown is not held by a database that is gone.
        self.stopping = False
        # True from the first failed connect until one succeeds: only the first
        # failure of an outage logs the whole error (later ones would repeat it
        # every two seconds for as long as it lasts).
        self._outage = False

    def current(self, role: str) -> store.Conn | None:
        """The open connection of ``role``, or None (no reconnect)."""
        conn = self._conns[role]
        return conn if conn is not None and not conn.closed else None

    async def get(self, role: str) -> store.Conn:
        """The connection for ``role``, reopened with backoff if it was lost."""
        conn = self.current(role)
        if conn is not None:
            return conn
        async with self._opening[role]:
            return await self._open(role)

    async def open(self, *roles: str) -> None:
        """Open ``roles``' connections now rather than at their first statement.

        A worker opens its start marks' and its record's connections at start-up.
        Opened at the first send instead, the connection and the planning of its
        statement made the first wake-up after a start take 11.5 ms; it takes 6-7 ms
        now (what remains is the first render's template compile and the server's
        first use of the tables), against about 1.4 ms for the ones after.
        """
        for role in roles:
            await self.get(role)

    async def _open(self, role: str) -> store.Conn:
        conn = self.current(role)  # opened while this call waited for the lock
        if conn is not None:
            return conn
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                batch = role in BATCH_ROLES
                conn = await store.connect(
                    self.url, f"outbox-worker {role} {self.worker_id}", prepared=batch
                )
                if batch:
                    try:
                        await store.plan_ahead(conn, role=role, worker=self.worker_id)
                    except BaseException:
                        await conn.close()
                        raise
            except CONNECTION_ERRORS as exc:
                self._stats["db_connect_failures"] += 1
                self._unavailable(role, exc, delay)
                if self.stopping and role == "claim":
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            self._outage = False
            self._conns[role] = conn
            return conn

    def _unavailable(self, role: str, exc: BaseException, delay: float) -> None:
        if self._outage:
            self._log.warning("db.unavailable", role=role, error=type(exc).__name__, retry_in=delay)
            return
        self._outage = True
        # libpq's message says why (refused, unknown host, auth failed, no such
        # database); it names host and user but never the password.
        self._log.warning(
            "db.unavailable",
            role=role,
            error=type(exc).__name__,
            detail=str(exc).strip(),
            retry_in=delay,
            **describe_server(self.url),
        )

    async def drop(self, role: str, exc: BaseException) -> None:
        """Throw away the connection of ``role`` after ``exc``; the next get reopens it."""
        self._log.warning("db.connection_lost", role=role, error=type(exc).__name__)
        await self.close(role)

    async def close(self, role: str) -> None:
        conn, self._conns[role] = self._conns[role], None
        if conn is not None:
            # It may be broken already: closing is best effort.
            with contextlib.suppress(Exception):
                await conn.close()

    async def close_all(self) -> None:
        for role in ROLES:
            await self.close(role)
