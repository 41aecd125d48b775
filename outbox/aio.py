"""The public API for asyncio: the functions of :mod:`outbox` as coroutines.

::

    async with await psycopg.AsyncConnection.connect(url) as aconn:
        await place_order(aconn, ...)
        await outbox.aio.enqueue(aconn, "order-42-confirmed", recipient="user-7",
                                 template="order_confirmed", data={"order": 42})
        await aconn.commit()

Each function takes the caller's async connection — a psycopg 3
``AsyncConnection``, or a SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on
the ``postgresql+psycopg_async`` driver — and runs in the transaction open on
it; nothing here commits. Signatures, checks, results and errors are those of
the sync functions (both are built from :mod:`outbox.calls`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from outbox import calls, errors
from outbox.api import is_async_connection
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


def _refuse_sync(conn: Any, function: str) -> None:
    if not is_async_connection(conn):
        raise errors.UnsupportedConnection(
            f"outbox.aio.{function} needs an async connection (psycopg AsyncConnection, "
            f"SQLAlchemy AsyncConnection or AsyncSession), got {type(conn).__name__}; "
            f"for a sync connection use outbox.{function}(conn, ...)"
        )


async def _driver_connection(conn: Any, function: str) -> Any:
    """The psycopg ``AsyncConnection`` under ``conn``, with the caller's transaction begun."""
    import psycopg

    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(conn, AsyncSession):
        # AsyncSession.connection() begins the session's transaction if needed.
        conn = await conn.connection()
    if isinstance(conn, AsyncConnection):
        if not conn.in_transaction():
            # Begin through SQLAlchemy so that its commit()/rollback() cover our rows.
            await conn.begin()
        driver = (await conn.get_raw_connection()).driver_connection
        if isinstance(driver, psycopg.AsyncConnection):
            return driver
        raise errors.UnsupportedConnection(
            f"outbox.aio.{function} runs on psycopg 3; this SQLAlchemy engine uses "
            f"{type(driver).__module__}.{type(driver).__name__} "
            "(use a postgresql+psycopg_async:// URL)"
        )
    raise errors.UnsupportedConnection(
        f"outbox.aio.{function} supports psycopg AsyncConnection and SQLAlchemy "
        f"AsyncConnection/AsyncSession, got {type(conn).__name__}"
    )


async def _run(conn: Any, function: str, call: calls.Call[R]) -> R:
    """Run a described call on the caller's async connection."""
    if call.query is None:
        return call.result(None)
    driver = await _driver_connection(conn, function)
    with calls.translating():
        async with driver.cursor() as cur:
            await cur.execute(query(call.query), call.params)
            row = await cur.fetchone()
    return call.result(calls.single_value(row))


async def _run_stream(conn: Any, stream: calls.Stream) -> int:
    """Run a described streaming enqueue on the caller's async connection (as outbox.api's)."""
    driver = await _driver_connection(conn, "enqueue_stream")
    if driver.autocommit:
        raise errors.UnsupportedConnection(
            "outbox.aio.enqueue_stream needs a transaction; this connection is in autocommit mode"
        )
    done = 0
    with calls.translating():
        async with driver.cursor() as cur:
            await cur.execute(query("stream_savepoint"))
            try:
                await cur.execute(query("stream_stage"))
                for first, rows in stream.chunks:
                    async with cur.copy(query("stream_copy")) as copy:
                        for row in rows:
                            await copy.write_row(row)
                    await cur.execute(query("stream_chunk"), {"first": first})
                    await cur.execute(query("stream_clear"))
                    done += len(rows)
                    if stream.progress is not None:
                        stream.progress(done)
                await cur.execute(query("stream_unstage"))
            except BaseException:
                # Undo what the stream wrote; the caller's transaction goes on.
                await cur.execute(query("stream_rollback"))
                await cur.execute(query("stream_release"))
                raise
            await cur.execute(query("stream_release"))
    return done


async def enqueue_stream(conn: Any, /, *args: Any, **kwargs: Any) -> int:
    _refuse_sync(conn, "enqueue_stream")
    return await _run_stream(conn, calls.enqueue_stream(*args, **kwargs))


enqueue_stream.__doc__ = calls.enqueue_stream.__doc__
enqueue_stream.__signature__ = calls.signature_with_conn(calls.enqueue_stream).replace(  # type: ignore[attr-defined]
    return_annotation="int"
)


def _async(
    describe: Callable[P, calls.Call[R]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """The coroutine function for a call description: ``await f(conn, *args, **kwargs)``."""
    function = describe.__name__

    @functools.wraps(describe)
    async def run(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # The connection first, so a sync one is named whatever the other arguments are.
        _refuse_sync(conn, function)
        return await _run(conn, function, describe(*args, **kwargs))

    run.__module__ = __name__
    run.__signature__ = calls.signature_with_conn(describe)  # type: ignore[attr-defined]
    return run


activate_template = _async(calls.activate_template)
broadcast = _async(calls.broadcast)
cancel = _async(calls.cancel)
cancel_broadcast = _async(calls.cancel_broadcast)
create_template = _async(calls.create_template)
create_topic = _async(calls.create_topic)
deactivate_device = _async(calls.deactivate_device)
enqueue = _async(calls.enqueue)
enqueue_many = _async(calls.enqueue_many)
erase_recipient = _async(calls.erase_recipient)
register_device = _async(calls.register_device)
set_preference = _async(calls.set_preference)
subscribe = _async(calls.subscribe)
unsubscribe = _async(calls.unsubscribe)
upsert_recipient = _async(calls.upsert_recipient)
