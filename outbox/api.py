"""The public API: enqueue and register inside the caller's transaction.

Every function takes the caller's connection — a psycopg 3 ``Connection``, a
SQLAlchemy ``Connection`` or ``Session`` (on the psycopg or psycopg2 driver) —
and runs in the transaction that is open on it. Nothing here commits: the
caller's commit makes the notification real (and wakes the workers); the
caller's rollback makes it never have existed. For asyncio (a psycopg
``AsyncConnection``, a SQLAlchemy ``AsyncConnection`` or ``AsyncSession``) use
:mod:`outbox.aio`, which has the same functions as coroutines.

Each call is one round trip to one SQL function (``sql/functions/``), the same
functions a producer in any language calls, so the checks are the same. The
functions themselves are described once, in :mod:`outbox.calls`; this module
only runs them on a sync connection.

Bad input raises :class:`outbox.errors.ValidationError` (or a subclass) naming
the field and value, and writes nothing. Type, NUL-character and JSON errors are
caught in Python before the round trip and leave the caller's transaction
usable. An error raised by the SQL function (unknown recipient or template,
malformed address, ...) is a failed statement: as with any, PostgreSQL then
requires the caller's transaction to be rolled back, or a savepoint to be used
around the call.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from outbox import calls, errors
from outbox.sql import query

__all__ = [
    "activate_template",
    "broadcast",
    "cancel",
    "cancel_broadcast",
    "create_template",
    "create_topic",
    "deactivate_device",
    "enqueue",
    "enqueue_many",
    "enqueue_stream",
    "erase_recipient",
    "register_device",
    "set_preference",
    "subscribe",
    "unsubscribe",
    "upsert_recipient",
]

P = ParamSpec("P")
R = TypeVar("R")


def is_async_connection(conn: Any) -> bool:
    """Whether ``conn`` is an asyncio connection or session (psycopg, SQLAlchemy, or other)."""
    import psycopg

    if isinstance(conn, psycopg.AsyncConnection):
        return True
    # Only look at SQLAlchemy's asyncio types if the application loaded them:
    # importing them costs more than the rest of this call.
    sa_asyncio = sys.modules.get("sqlalchemy.ext.asyncio")
    if sa_asyncio is not None and isinstance(
        conn, (sa_asyncio.AsyncConnection, sa_asyncio.AsyncSession)
    ):
        return True
    # Anything else whose execute() is a coroutine (asyncpg, an async pool proxy...).
    return inspect.iscoroutinefunction(getattr(type(conn), "execute", None))


def _refuse_async(conn: Any, function: str) -> None:
    if is_async_connection(conn):
        # Without this, psycopg's AsyncCursor fails later with "'coroutine' object is
        # not subscriptable", which says nothing about what to do.
        raise errors.UnsupportedConnection(
            f"outbox.{function} was given an async connection ({type(conn).__name__}); "
            f"use outbox.aio: await outbox.aio.{function}(conn, ...)"
        )


def _dbapi_connection(conn: Any, function: str) -> Any:
    """The DBAPI connection under ``conn``, with the caller's transaction begun."""
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.orm import Session

    if isinstance(conn, Session):
        # Session.connection() begins the session's transaction if needed.
        return conn.connection().connection
    if isinstance(conn, SAConnection):
        if not conn.in_transaction():
            # Begin through SQLAlchemy so that its commit()/rollback() cover our rows.
            conn.begin()
        return conn.connection
    if not callable(getattr(conn, "cursor", None)):
        raise errors.UnsupportedConnection(
            f"outbox.{function} needs a database connection (psycopg Connection, SQLAlchemy "
            f"Connection or Session), got {type(conn).__name__}"
        )
    return conn


def _run(conn: Any, function: str, call: calls.Call[R]) -> R:
    """Run a described call on the caller's connection."""
    if call.query is None:
        return call.result(None)
    cur = _dbapi_connection(conn, function).cursor()
    try:
        with calls.translating():
            cur.execute(query(call.query), call.params)
            row = cur.fetchone()
    finally:
        cur.close()
    return call.result(calls.single_value(row))


def _run_stream(conn: Any, stream: calls.Stream) -> int:
    """Run a described streaming enqueue on the caller's connection (see calls.Stream)."""
    raw = _dbapi_connection(conn, "enqueue_stream")
    if getattr(raw, "autocommit", False):
        raise errors.UnsupportedConnection(
            "outbox.enqueue_stream needs a transaction; this connection is in autocommit mode"
        )
    cur = raw.cursor()
    if not callable(getattr(cur, "copy", None)):
        cur.close()
        raise errors.UnsupportedConnection(
            f"outbox.enqueue_stream streams with psycopg 3's COPY; {type(cur).__module__} "
            "cursors have none (use a psycopg 3 connection, or outbox.enqueue_many)"
        )
    done = 0
    try:
        with calls.translating():
            cur.execute(query("stream_savepoint"))
            try:
                cur.execute(query("stream_stage"))
                for first, rows in stream.chunks:
                    with cur.copy(query("stream_copy")) as copy:
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(query("stream_chunk"), {"first": first})
                    cur.execute(query("stream_clear"))
                    done += len(rows)
                    if stream.progress is not None:
                        stream.progress(done)
                cur.execute(query("stream_unstage"))
            except BaseException:
                # Undo what the stream wrote; the caller's transaction goes on.
                cur.execute(query("stream_rollback"))
                cur.execute(query("stream_release"))
                raise
            cur.execute(query("stream_release"))
    finally:
        cur.close()
    return done


def enqueue_stream(conn: Any, /, *args: Any, **kwargs: Any) -> int:
    _refuse_async(conn, "enqueue_stream")
    return _run_stream(conn, calls.enqueue_stream(*args, **kwargs))


enqueue_stream.__doc__ = calls.enqueue_stream.__doc__
enqueue_stream.__signature__ = calls.signature_with_conn(calls.enqueue_stream).replace(  # type: ignore[attr-defined]
    return_annotation="int"
)


def _sync(describe: Callable[P, calls.Call[R]]) -> Callable[Concatenate[Any, P], R]:
    """The sync API function for a call description: ``f(conn, *args, **kwargs)``."""
    function = describe.__name__

    @functools.wraps(describe)
    def run(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # The connection first: an async connection gets "use outbox.aio" whatever
        # the other arguments are.
        _refuse_async(conn, function)
        return _run(conn, function, describe(*args, **kwargs))

    run.__module__ = __name__
    run.__signature__ = calls.signature_with_conn(describe)  # type: ignore[attr-defined]
    return run


activate_template = _sync(calls.activate_template)
broadcast = _sync(calls.broadcast)
cancel = _sync(calls.cancel)
cancel_broadcast = _sync(calls.cancel_broadcast)
create_template = _sync(calls.create_template)
create_topic = _sync(calls.create_topic)
deactivate_device = _sync(calls.deactivate_device)
enqueue = _sync(calls.enqueue)
enqueue_many = _sync(calls.enqueue_many)
erase_recipient = _sync(calls.erase_recipient)
register_device = _sync(calls.register_device)
set_preference = _sync(calls.set_preference)
subscribe = _sync(calls.subscribe)
unsubscribe = _sync(calls.unsubscribe)
upsert_recipient = _sync(calls.upsert_recipient)
