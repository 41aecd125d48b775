"""outbox.aio against the real database, on psycopg's AsyncConnection and SQLAlchemy's
AsyncConnection and AsyncSession: atomic with the caller's transaction, same checks and
errors as the sync API; and each API refuses the other kind of connection clearly."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import outbox
from outbox import errors
from outbox.db import sqlalchemy_url
from tests import factories


def _rows(db_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as c:
        return c.execute(
            "SELECT n.message_id, d.channel::text FROM outbox.notifications n "
            "JOIN outbox.deliveries d ON d.notification_id = n.id ORDER BY d.id"
        ).fetchall()


@pytest.fixture
def seven(db_url: str) -> str:
    with psycopg.connect(db_url) as c:
        factories.seven(c)
    return db_url


def _async_url(db_url: str) -> str:
    return sqlalchemy_url(db_url).replace("postgresql+psycopg:", "postgresql+psycopg_async:", 1)


@asynccontextmanager
async def _psycopg(db_url: str) -> AsyncIterator[Any]:
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        yield aconn


@asynccontextmanager
async def _sa_connection(db_url: str) -> AsyncIterator[Any]:
    engine = create_async_engine(_async_url(db_url))
    try:
        async with engine.connect() as aconn:
            yield aconn
    finally:
        await engine.dispose()


@asynccontextmanager
async def _sa_session(db_url: str) -> AsyncIterator[Any]:
    engine = create_async_engine(_async_url(db_url))
    try:
        async with AsyncSession(engine) as session:
            yield session
    finally:
        await engine.dispose()


CONNECTIONS = {
    "psycopg": _psycopg,
    "sqlalchemy_connection": _sa_connection,
    "sqlalchemy_session": _sa_session,
}


def _run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(CONNECTIONS))
def test_rollback_sends_nothing_and_commit_creates_the_rows(seven, kind):
    connect = CONNECTIONS[kind]

    async def scenario() -> tuple[int, list[int]]:
        async with connect(seven) as aconn:
            await outbox.aio.enqueue(
                aconn,
                "rolled-back",
                recipient="user-7",
                template="order_confirmed",
                data={"order": 1},
            )
            await aconn.rollback()
        assert _rows(seven) == []
        async with connect(seven) as aconn:
            nid = await outbox.aio.enqueue(
                aconn,
                "m-1",
                recipient="user-7",
                template="order_confirmed",
                channels=["email"],
                data={"order": 1},
            )
            ids = await outbox.aio.enqueue_many(
                aconn,
                [
                    {
                        "message_id": "m-2",
                        "recipient": "user-7",
                        "template": "order_confirmed",
                        "channels": "sms",
                        "data": {"order": 2},
                    },
                    {"message_id": "m-1", "recipient": "user-7", "template": "order_confirmed"},
                ],
            )
            # Nothing is visible to others before the caller commits.
            assert _rows(seven) == []
            await aconn.commit()
        return nid, ids

    nid, ids = _run(scenario)
    assert ids[1] == nid and isinstance(nid, int)
    assert _rows(seven) == [("m-1", "email"), ("m-2", "sms")]


def test_sqlalchemy_session_rollback_takes_the_business_write_and_the_notification(seven):
    async def scenario() -> None:
        async with _sa_session(seven) as session:
            await session.execute(text("CREATE TABLE public.orders (id int)"))
            await session.execute(text("INSERT INTO public.orders VALUES (1)"))
            await outbox.aio.enqueue(
                session,
                "order-1",
                recipient="user-7",
                template="order_confirmed",
                data={"order": 1},
            )
            await session.rollback()
        async with _sa_session(seven) as session:
            await session.execute(text("CREATE TABLE public.orders (id int)"))
            await outbox.aio.enqueue(
                session,
                "order-1",
                recipient="user-7",
                template="order_confirmed",
                data={"order": 1},
            )
            await session.execute(text("INSERT INTO public.orders VALUES (1)"))
            await session.commit()

    _run(scenario)
    assert {m for m, _ in _rows(seven)} == {"order-1"}
    with psycopg.connect(seven) as c:
        assert c.execute("SELECT count(*) FROM public.orders").fetchone()[0] == 1


@pytest.mark.parametrize("kind", sorted(CONNECTIONS))
def test_errors_are_the_sync_apis(seven, kind):
    connect = CONNECTIONS[kind]

    async def scenario() -> None:
        async with connect(seven) as aconn:
            # Refused in Python: the transaction goes on.
            with pytest.raises(errors.ValidationError, match=r"data\['x'\] is nan") as info:
                await outbox.aio.enqueue(
                    aconn,
                    "bad",
                    recipient="user-7",
                    template="order_confirmed",
                    data={"x": math.nan},
                )
            assert info.value.field == "data"
            await outbox.aio.enqueue(
                aconn,
                "good",
                recipient="user-7",
                template="order_confirmed",
                channels=["push"],
                data={"order": 1},
            )
            await aconn.commit()
            # Refused by the SQL function: the same exception class and field as sync.
            with pytest.raises(errors.UnknownRecipient, match="unknown recipient 'ghost'") as info:
                await outbox.aio.enqueue(
                    aconn, "ghost-1", recipient="ghost", template="order_confirmed"
                )
            assert info.value.field == "recipient"
            await aconn.rollback()
            with pytest.raises(errors.NotFound, match="no notification with message_id 'nope'"):
                await outbox.aio.cancel(aconn, "nope")
            await aconn.rollback()

    _run(scenario)
    assert _rows(seven) == [("good", "push"), ("good", "push")]


def test_registration_and_templates_through_aio(db_url):
    async def scenario() -> None:
        async with _psycopg(db_url) as aconn:
            rid = await outbox.aio.upsert_recipient(aconn, "user-9", email="nine@example.com")
            dev = await outbox.aio.register_device(aconn, "user-9", "apns-token-0009", "apns")
            version = await outbox.aio.create_template(aconn, "hello", "push", "Hi", title="Hi")
            assert isinstance(rid, int) and isinstance(dev, int) and version == 1
            assert await outbox.aio.create_template(aconn, "hello", "push", "Hi v2") == 2
            assert await outbox.aio.activate_template(aconn, "hello", "push", 1) is None
            assert await outbox.aio.set_preference(aconn, "user-9", "email", opted_in=False) is None
            assert await outbox.aio.enqueue(aconn, "m", recipient="user-9", template="hello") > 0
            assert await outbox.aio.cancel(aconn, "m") == 1
            assert await outbox.aio.deactivate_device(aconn, "apns-token-0009") is True
            assert await outbox.aio.deactivate_device(aconn, "apns-token-0009") is False
            assert await outbox.aio.enqueue_many(aconn, []) == []
            await aconn.commit()

    _run(scenario)
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT version FROM outbox.templates WHERE active").fetchall() == [(1,)]


@pytest.mark.parametrize("kind", sorted(CONNECTIONS))
def test_sync_api_refuses_an_async_connection(seven, kind):
    connect = CONNECTIONS[kind]

    async def scenario() -> None:
        async with connect(seven) as aconn:
            with pytest.raises(
                errors.UnsupportedConnection,
                match=r"outbox.enqueue was given an async connection "
                r"\(\w+\); use outbox.aio: await outbox.aio.enqueue",
            ):
                # Even with bad arguments, the connection is what is reported.
                outbox.enqueue(aconn, 42, template="order_confirmed")
            with pytest.raises(
                TypeError, match="use outbox.aio: await outbox.aio.upsert_recipient"
            ):
                outbox.upsert_recipient(aconn, "user-8")
            # Nothing was sent on it: it is still usable.
            await outbox.aio.enqueue(
                aconn, "after", recipient="user-7", template="order_confirmed", channels="email"
            )
            await aconn.commit()

    _run(scenario)
    assert _rows(seven) == [("after", "email")]


def test_aio_refuses_a_sync_connection(conn):
    with pytest.raises(
        errors.UnsupportedConnection,
        match=r"outbox.aio.cancel needs an async connection .* got Connection; "
        r"for a sync connection use outbox.cancel\(conn, ...\)",
    ):
        asyncio.run(outbox.aio.cancel(conn, "m"))
    with pytest.raises(TypeError, match="got NoneType"):
        asyncio.run(outbox.aio.enqueue(None, "m", template="t"))


def test_aio_functions_mirror_the_sync_ones():
    for name in outbox.aio.__all__:
        sync, coro = getattr(outbox, name), getattr(outbox.aio, name)
        assert inspect.iscoroutinefunction(coro), name
        assert inspect.signature(coro) == inspect.signature(sync), name
        assert coro.__doc__ == sync.__doc__ and sync.__doc__, name
