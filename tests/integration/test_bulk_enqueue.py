"""The set-based core (``outbox.enqueue_items``) against the loop it replaced.

``outbox.enqueue_many`` used to call ``outbox.enqueue`` item by item in PL/pgSQL
(migration 0007, ``migrations/frozen/0007_enqueue.sql``). These tests install that
frozen code under another schema, ``outbox_reference``, writing to the same tables,
and check that the set-based paths — ``enqueue_many``, ``enqueue`` one by one and
the Python stream (COPY into a staging table, the core per chunk) — write the same
rows and events and return the same ids for the same inputs, and refuse the same
bad inputs with the same SQLSTATE, field and message.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.orm import Session

import outbox
from outbox.db import sqlalchemy_url
from tests import factories

FROZEN_0007 = Path(__file__).parents[2] / "migrations" / "frozen" / "0007_enqueue.sql"
NOW = datetime.now(UTC)


def _install_reference(conn: psycopg.Connection) -> None:
    text = FROZEN_0007.read_text(encoding="utf-8")
    text = text.replace("FUNCTION outbox.enqueue(", "FUNCTION outbox_reference.enqueue(")
    text = text.replace("FUNCTION outbox.enqueue_many(", "FUNCTION outbox_reference.enqueue_many(")
    text = text.replace("v_ids || outbox.enqueue(", "v_ids || outbox_reference.enqueue(")
    conn.execute("CREATE SCHEMA outbox_reference")
    conn.execute(text.encode())


@pytest.fixture
def world(conn: psycopg.Connection) -> psycopg.Connection:
    """Recipients of every kind, categories, a suppression, and the reference functions."""
    factories.templates(conn)
    factories.templates(conn, "email_only", ("email",))
    factories.recipient(conn, "r-full", email="full@example.com", phone="+14155550101")
    factories.device(conn, "r-full", "apns", "apns-token-full-1")
    factories.device(conn, "r-full", "fcm", "fcm-token-full-2")
    factories.recipient(conn, "r-nodev", email="nodev@example.com", phone="+14155550102")
    factories.recipient(conn, "r-inactive", email="inactive@example.com", phone=None)
    factories.device(conn, "r-inactive", "apns", "apns-token-inactive")
    outbox.deactivate_device(conn, "apns-token-inactive")
    factories.recipient(conn, "r-optout", email="optout@example.com", phone="+14155550104")
    factories.device(conn, "r-optout", "fcm", "fcm-token-optout")
    outbox.set_preference(conn, "r-optout", "email", opted_in=False)
    outbox.set_preference(conn, "r-optout", "sms", opted_in=False, category="marketing")
    factories.recipient(conn, "r-supp", email="bounced@example.com", phone="+14155550105")
    conn.execute(
        "INSERT INTO outbox.categories (name, critical) VALUES ('marketing', false), "
        "('security', true)"
    )
    conn.execute(
        "INSERT INTO outbox.suppressions (channel, destination, reason) VALUES "
        "('email', 'bounced@example.com', 'sendgrid: bounce'), "
        "('sms', '+14155550177', 'twilio: STOP')"
    )
    _install_reference(conn)
    conn.commit()
    return conn


def _items(prefix: str) -> list[dict[str, Any]]:
    """Every kind of item enqueue knows, with repeats inside the list."""
    t = "order_confirmed"
    items: list[dict[str, Any]] = [
        {"message_id": "full", "recipient": "r-full", "template": t, "data": {"n": 1}},
        {
            "message_id": "nodev",
            "recipient": "r-nodev",
            "template": t,
            "channels": ["push", "email"],
        },
        {"message_id": "inactive", "recipient": "r-inactive", "template": t},
        {"message_id": "optout", "recipient": "r-optout", "template": t, "category": "marketing"},
        {"message_id": "critical", "recipient": "r-optout", "template": t, "category": "security"},
        {"message_id": "supp", "recipient": "r-supp", "template": "email_only"},
        {"message_id": "email", "address": "direct@example.com", "template": t},
        {"message_id": "sms", "address": "+14155550199", "template": t, "priority": -5},
        {"message_id": "sms-stop", "address": "+14155550177", "template": t},
        {"message_id": "pushless", "recipient": "r-nodev", "template": t, "channels": "push"},
        {
            "message_id": "expired",
            "recipient": "r-full",
            "template": t,
            "expires_at": NOW - timedelta(hours=1),
        },
        {
            "message_id": "scheduled",
            "recipient": "r-full",
            "template": t,
            "send_at": NOW + timedelta(days=1),
            "expires_at": NOW + timedelta(days=2),
            "priority": 7,
            "data": {"deep": {"list": [1, 2.5, "x", None, True]}},
        },
        # A repeat inside the list, with other content: it gets the first one's id.
        {"message_id": "full", "address": "other@example.com", "template": "email_only"},
        {"message_id": "twice", "recipient": "r-full", "template": t, "channels": ["sms", "sms"]},
        # A repeat whose own send_at would be refused for a new message id.
        {
            "message_id": "twice",
            "recipient": "r-full",
            "template": t,
            "send_at": NOW + timedelta(days=800),
        },
    ]
    for item in items:
        item["message_id"] = f"{prefix}{item['message_id']}"
    return items


def _second(prefix: str) -> list[dict[str, Any]]:
    """A later call: repeats of the first call's ids (across calls) and a new one."""
    return [
        {"message_id": f"{prefix}email", "address": "changed@example.com", "template": "nope"},
        {"message_id": f"{prefix}new", "recipient": "r-full", "template": "email_only"},
        {"message_id": f"{prefix}full", "recipient": "r-full", "template": "order_confirmed"},
    ]


def _json(items: list[dict[str, Any]]) -> str:
    def default(value: Any) -> str:
        return value.isoformat()

    return json.dumps(items, default=default)


def _reference(conn: psycopg.Connection, items: list[dict[str, Any]]) -> list[int]:
    return conn.execute(
        "SELECT outbox_reference.enqueue_many(%s::jsonb)", (_json(items),)
    ).fetchone()[0]


def _many(conn: psycopg.Connection, items: list[dict[str, Any]]) -> list[int]:
    return outbox.enqueue_many(conn, items)


def _single(conn: psycopg.Connection, items: list[dict[str, Any]]) -> list[int]:
    return [outbox.enqueue(conn, **item) for item in items]


def _ids_of_stream(conn: psycopg.Connection, items: list[dict[str, Any]]) -> list[int]:
    # The stream returns a count; the ids are looked up by message id.
    assert outbox.enqueue_stream(conn, iter(items), chunk_size=4) == len(items)
    return [
        conn.execute(
            "SELECT id FROM outbox.notifications WHERE message_id = %s", (item["message_id"],)
        ).fetchone()[0]
        for item in items
    ]


WAYS: dict[str, Callable[[psycopg.Connection, list[dict[str, Any]]], list[int]]] = {
    "enqueue_many": _many,
    "enqueue": _single,
    "enqueue_stream": _ids_of_stream,
}

SNAPSHOT = """
SELECT 'n', substr(n.message_id, length(%(p)s) + 1), jsonb_build_array(
           n.recipient_id, n.address, n.template_key, n.data, n.category, n.priority,
           n.channels, n.send_at, n.expires_at)::text
FROM outbox.notifications n WHERE n.message_id LIKE %(p)s || '%%'
UNION ALL
SELECT 'd', substr(n.message_id, length(%(p)s) + 1), jsonb_build_array(
           d.channel, d.destination, d.device_id, d.status, d.priority, d.max_attempts,
           CASE WHEN d.next_attempt_at > d.created_at THEN d.next_attempt_at END, d.expires_at,
           d.last_error, d.finished_at IS NOT NULL, d.attempts,
           (SELECT jsonb_agg(jsonb_build_array(e.kind, e.attempt, e.detail) ORDER BY e.kind)
            FROM outbox.events e WHERE e.delivery_id = d.id))::text
FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id
WHERE n.message_id LIKE %(p)s || '%%'
ORDER BY 1, 2, 3
"""


def _snapshot(conn: psycopg.Connection, prefix: str) -> list[tuple[str, str, str]]:
    return conn.execute(SNAPSHOT, {"p": prefix}).fetchall()


def _names(conn: psycopg.Connection, ids: list[int], prefix: str) -> list[str]:
    """Each returned id as the message id it belongs to, without the prefix."""
    names = dict(
        conn.execute(
            "SELECT id, message_id FROM outbox.notifications WHERE id = ANY (%s)", (ids,)
        ).fetchall()
    )
    return [names[i][len(prefix) :] for i in ids]


@pytest.mark.parametrize("way", sorted(WAYS))
def test_the_set_based_paths_write_what_the_loop_wrote(world, way):
    conn = world
    ref_ids = _reference(conn, _items("ref:")) + _reference(conn, _second("ref:"))
    new_ids = WAYS[way](conn, _items("new:")) + WAYS[way](conn, _second("new:"))
    conn.commit()
    assert _names(conn, new_ids, "new:") == _names(conn, ref_ids, "ref:")
    assert _snapshot(conn, "new:") == _snapshot(conn, "ref:")
    # The scenario covers what it claims to.
    statuses = {row[2] for row in _snapshot(conn, "new:") if row[0] == "d"}
    assert any('"expired"' in s for s in statuses)
    assert any("opted out of email" in s for s in statuses)
    assert any("suppressed address: sendgrid: bounce" in s for s in statuses)
    assert any("no active device" in s for s in statuses)
    # Repeats return the first id: inside a list and across calls.
    assert new_ids[12] == new_ids[0] and new_ids[14] == new_ids[13]
    assert new_ids[-3] == new_ids[6] and new_ids[-1] == new_ids[0]


def _outcome(conn: psycopg.Connection, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a call did: its result, or its error's SQLSTATE, field, message and detail."""
    try:
        with conn.transaction(force_rollback=True):
            return ("ok", len(conn.execute(sql, params).fetchone()[0]))
    except psycopg.Error as exc:
        d = exc.diag
        return (exc.sqlstate, d.column_name, d.message_primary, d.message_detail)


GOOD = {"message_id": "fine", "recipient": "r-full", "template": "order_confirmed"}
BAD_BATCHES: list[list[Any]] = [
    [GOOD, {"message_id": "", "recipient": "r-full", "template": "order_confirmed"}],
    [GOOD, {"message_id": " \t", "address": "a@b.io", "template": "order_confirmed"}],
    [GOOD, {"message_id": "x" * 256, "address": "a@b.io", "template": "order_confirmed"}],
    [GOOD, {"message_id": "m", "recipient": "r-full"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": " "}],
    [GOOD, {"message_id": "m", "recipient": "  ", "template": "order_confirmed"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "data": [1]}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "data": {"x": "y" * 70000}}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "priority": 101}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "priority": 1.5}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "priority": "high"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "send_at": "infinity"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "send_at": "soon"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "expires_at": "nope"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "send_at": 5}],
    [
        GOOD,
        {
            "message_id": "m",
            "recipient": "r-full",
            "template": "order_confirmed",
            "send_at": "2030-01-02T00:00:00Z",
            "expires_at": "2030-01-01T00:00:00Z",
        },
    ],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "category": "Bad Name"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "channels": []}],
    [
        GOOD,
        {"message_id": "m", "recipient": "r-full", "template": "t", "channels": ["email", "fax"]},
    ],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "channels": [None]}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "channels": ["sms", 3]}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "channels": {"a": 1}}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "address": "a@b.io", "template": "t"}],
    [GOOD, {"message_id": "m", "address": "not-an-address", "template": "order_confirmed"}],
    [GOOD, {"message_id": "m", "address": "a@b", "template": "order_confirmed"}],
    [GOOD, {"message_id": "m", "address": "+1", "template": "order_confirmed"}],
    [GOOD, {"message_id": "m", "address": "a@b.io", "template": "t", "channels": ["email", "sms"]}],
    [GOOD, {"message_id": "m", "address": "a@b.io", "template": "t", "channels": "push"}],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "t", "prio": 1}],
    [GOOD, "not an object"],
    [GOOD, {"message_id": 7, "recipient": "r-full", "template": "t"}],
    # Group 2 and 3: the clock and what is stored.
    [
        GOOD,
        {
            "message_id": "m",
            "recipient": "r-full",
            "template": "order_confirmed",
            "send_at": "2001-01-01Z",
        },
    ],
    [
        GOOD,
        {
            "message_id": "m",
            "recipient": "r-full",
            "template": "order_confirmed",
            "expires_at": "2001-01-01Z",
        },
    ],
    [GOOD, {"message_id": "m", "recipient": "r-full", "template": "nope"}],
    [GOOD, {"message_id": "m", "recipient": "nobody", "template": "order_confirmed"}],
    [
        GOOD,
        {
            "message_id": "m",
            "recipient": "r-inactive",
            "template": "order_confirmed",
            "channels": ["push", "sms"],
        },
    ],
    [
        GOOD,
        {"message_id": "m", "recipient": "r-full", "template": "email_only", "channels": ["sms"]},
    ],
    [GOOD, {"message_id": "m", "address": "+14155550100", "template": "email_only"}],
    # The first bad item wins, whatever kind of problem the later ones have.
    [
        {"message_id": "a", "recipient": "nobody", "template": "order_confirmed"},
        {"message_id": "b", "recipient": "r-full", "template": "t", "priority": "x"},
    ],
    [
        {"message_id": "a", "recipient": "r-full", "template": "nope"},
        {"message_id": "b", "recipient": "r-full", "template": "t", "send_at": "soon"},
    ],
    [GOOD, {"message_id": "b", "recipient": "r-full", "template": "nope"}, {"message_id": ""}],
    # A repeat is still checked for its form...
    [GOOD, {"message_id": "fine", "recipient": "r-full", "template": "t", "priority": 500}],
    # ...but not against the clock or stored rows.
    [
        GOOD,
        {"message_id": "fine", "recipient": "nobody", "template": "nope", "send_at": "2001-01-01Z"},
    ],
    [],
]


@pytest.mark.parametrize("batch", BAD_BATCHES, ids=range(len(BAD_BATCHES)))
def test_enqueue_many_refuses_what_the_loop_refused_with_the_same_error(world, batch):
    items = _json(batch)
    world.execute("SELECT 1")  # one transaction, so that both see the same now()
    expected = _outcome(world, "SELECT outbox_reference.enqueue_many(%s::jsonb)", (items,))
    assert _outcome(world, "SELECT outbox.enqueue_many(%s::jsonb)", (items,)) == expected
    assert world.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0] == 0


SINGLE_CASES: list[dict[str, Any]] = [
    {"message_id": "m", "recipient": "r-full"},
    {"message_id": "m", "recipient": "r-full", "template": "order_confirmed", "priority": None},
    {"message_id": "m", "recipient": "r-full", "template": "order_confirmed", "data": None},
    {"message_id": None, "recipient": "r-full", "template": "order_confirmed"},
    {"message_id": "m", "recipient": "r-nodev", "template": "email_only", "channels": ["push"]},
    {
        "message_id": "m",
        "address": "+14155550100",
        "template": "order_confirmed",
        "channels": ["sms"],
    },
    {
        "message_id": "m",
        "recipient": "r-full",
        "template": "order_confirmed",
        "channels": ["sms", None],
    },
]


@pytest.mark.parametrize("args", SINGLE_CASES, ids=range(len(SINGLE_CASES)))
def test_enqueue_answers_as_the_loop_did(world, args):
    casts = {"data": "::jsonb", "channels": "::text[]", "priority": "::integer"}
    names = ", ".join(f"{k} => %({k})s{casts.get(k, '')}" for k in args)
    params = {k: json.dumps(v) if k == "data" and v is not None else v for k, v in args.items()}

    def outcome(function: str) -> tuple[Any, ...]:
        try:
            with world.transaction(force_rollback=True):
                return (
                    "ok",
                    world.execute(f"SELECT {function}({names}) IS NOT NULL", params).fetchone()[0],
                )
        except psycopg.Error as exc:
            return (exc.sqlstate, exc.diag.column_name, exc.diag.message_primary)

    world.execute("SELECT 1")  # one transaction, so that both see the same now()
    assert outcome("outbox.enqueue") == outcome("outbox_reference.enqueue")


def test_enqueue_items_names_the_item_with_the_callers_label_and_offset(world):
    row = (
        "ROW(%s, 'r-full', 'order_confirmed', '{}', NULL, NULL, NULL, 0, NULL, NULL)"
        "::outbox.enqueue_item"
    )
    sql = f"SELECT outbox.enqueue_items(ARRAY[{row}, {row}], 'outbox.broadcast', 500)"
    with pytest.raises(psycopg.Error) as caught:
        world.execute(sql, ("ok", " "))
    assert caught.value.sqlstate == "OB001"
    assert caught.value.diag.column_name == "message_id"
    assert caught.value.diag.message_primary == (
        "outbox.broadcast: items[501]: message_id is blank (white space only)"
    )
    world.rollback()
    assert world.execute("SELECT outbox.enqueue_items('{}')").fetchone()[0] == []
    assert world.execute("SELECT outbox.enqueue_items(NULL)").fetchone()[0] == []


# -- the Python stream ------------------------------------------------------------------


def _generated(
    n: int, *, bad_at: int | None = None, bad: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    for i in range(n):
        item: dict[str, Any] = {
            "message_id": f"gen-{i}",
            "address": f"user{i}@example.com",
            "template": "order_confirmed",
            "data": {"n": i},
        }
        if i == bad_at:
            item.update(bad or {})
        yield item


def _count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0]


def test_a_bad_item_in_the_database_is_named_by_its_index_in_the_stream_and_nothing_stays(world):
    conn = world
    conn.execute("SELECT 1")  # the caller's own work in this transaction
    with pytest.raises(outbox.UnknownTemplate) as caught:
        outbox.enqueue_stream(
            conn, _generated(2500, bad_at=1234, bad={"template": "nope"}), chunk_size=1000
        )
    assert str(caught.value) == (
        "outbox.enqueue_stream: items[1234]: unknown template 'nope' (no active version)"
    )
    assert caught.value.field == "template"
    # The stream undid its own writes (a savepoint); the caller's transaction goes on.
    assert _count(conn) == 0
    conn.commit()
    assert _count(conn) == 0


def test_a_bad_item_in_python_is_named_by_its_index_and_nothing_stays(world):
    conn = world
    seen: list[int] = []
    with pytest.raises(outbox.ValidationError) as caught:
        outbox.enqueue_stream(
            conn,
            _generated(1800, bad_at=1500, bad={"priority": "7"}),
            chunk_size=500,
            progress=seen.append,
        )
    assert str(caught.value).startswith("notifications[1500]: priority must be an integer")
    assert caught.value.field == "priority"
    assert seen == [500, 1000, 1500]
    conn.commit()
    assert _count(conn) == 0


def test_the_stream_writes_nothing_if_the_caller_rolls_back(world):
    assert outbox.enqueue_stream(world, _generated(1200)) == 1200
    assert _count(world) == 1200
    world.rollback()
    assert _count(world) == 0


def test_the_stream_refuses_an_autocommit_connection(db_url):
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        pytest.raises(outbox.UnsupportedConnection),
    ):
        outbox.enqueue_stream(conn, _generated(1))


def test_the_stream_runs_on_a_sqlalchemy_session(world, db_url):
    engine = sqlalchemy.create_engine(sqlalchemy_url(db_url))
    try:
        with Session(engine) as session:
            assert outbox.enqueue_stream(session, _generated(30), chunk_size=7) == 30
            session.commit()
    finally:
        engine.dispose()
    assert _count(world) == 30


@pytest.mark.slow
def test_the_stream_holds_a_chunk_not_the_stream(world):
    """100k notifications from a generator: memory stays that of a chunk."""
    counts: list[int] = []
    tracemalloc.start()
    try:
        done = outbox.enqueue_stream(
            world, _generated(100_000), chunk_size=1000, progress=counts.append
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    world.commit()
    assert done == 100_000 and _count(world) == 100_000
    assert counts == list(range(1000, 100_001, 1000))
    # The 100k items as a list of dicts alone would take over 50 MB.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_the_async_stream_writes_in_the_callers_transaction(world, db_url):
    asyncio.run(_async_stream(db_url))
    assert _count(world) == 0


async def _async_stream(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        seen: list[int] = []
        assert (
            await outbox.aio.enqueue_stream(
                aconn, _generated(25), chunk_size=10, progress=seen.append
            )
            == 25
        )
        assert seen == [10, 20, 25]
        await aconn.rollback()
        with pytest.raises(
            outbox.ValidationError, match=r"outbox\.enqueue_stream: items\[3\]: address"
        ):
            await outbox.aio.enqueue_stream(aconn, _generated(5, bad_at=3, bad={"address": "x@y"}))
        await aconn.commit()


def test_the_producer_role_can_stream_but_not_expand_by_itself(world, login):
    """outbox_producer has no table rights: the stream's temporary table is its own,
    enqueue_items runs as its owner, and enqueue_deliveries is out of its reach."""
    with psycopg.connect(login("outbox_producer")) as producer:
        assert outbox.enqueue_stream(producer, _generated(30), chunk_size=8) == 30
        producer.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            producer.execute("SELECT outbox.enqueue_deliveries(ARRAY[1::bigint])")
    assert _count(world) == 30
