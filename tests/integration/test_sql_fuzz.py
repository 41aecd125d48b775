"""Fuzzing the SQL functions themselves, called from plain SQL the way a producer in any
language calls them (no Python checks in front): ``outbox.enqueue`` over its arguments
and ``outbox.enqueue_many`` over its items.

Every call either succeeds, and what it wrote can be delivered (finite due times within
the horizon, no blank ids, only known keys), or fails with a SQLSTATE of class OB whose
COLUMN names one of the call's fields and whose message names it too; a failed call
writes nothing: the rows of notifications, deliveries and events are counted before
and after, around a savepoint. One notification is committed before the examples run,
so some calls repeat an existing message id."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import factories

FIELDS = frozenset(
    {
        "message_id",
        "recipient",
        "template",
        "data",
        "channels",
        "address",
        "category",
        "priority",
        "send_at",
        "expires_at",
    }
)

ENQUEUE = (
    "SELECT outbox.enqueue(message_id => %(message_id)s, recipient => %(recipient)s, "
    "template => %(template)s, data => %(data)s::jsonb, channels => %(channels)s::text[], "
    "address => %(address)s, category => %(category)s, priority => %(priority)s, "
    "send_at => %(send_at)s::timestamptz, expires_at => %(expires_at)s::timestamptz)"
)
ENQUEUE_MANY = "SELECT outbox.enqueue_many(%(items)s::jsonb)"

SEEN = "seen-1"  # committed by the fixture: calls naming it are repeats

# PostgreSQL text cannot hold NUL and UTF-8 has no lone surrogates: the driver or the
# server refuses those before any function runs, so they are not the functions' to name.
pg_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
blank = st.sampled_from([" ", "  ", "\t\n", "\u00a0", "\u3000"])


def moment(days: int) -> st.SearchStrategy[str]:
    """A timestamptz literal within ``days`` of now."""
    now = datetime.now(UTC)
    return st.integers(-days, days).map(lambda d: (now + timedelta(days=d)).isoformat())


# Far off or infinite: refused, or (epoch) more than a year ago.
far_moment = st.sampled_from(
    [
        "infinity",
        "-infinity",
        "294276-01-01 00:00:00+00",
        "4713-01-01 00:00:00+00 BC",
        "epoch",
        "9999-12-31 23:59:59+00",
    ]
)

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    pg_text,
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(pg_text, children, max_size=3)
    ),
    max_leaves=10,
)

# Each of enqueue's arguments: (a good value, an odd one).
ARGUMENTS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "message_id": (
        st.uuids().map(str),
        st.one_of(st.sampled_from([None, SEEN, "", "m" * 256]), blank, pg_text),
    ),
    "recipient": (st.just("user-7"), st.one_of(st.sampled_from([None, "ghost"]), blank, pg_text)),
    "template": (st.just("order_confirmed"), st.one_of(st.sampled_from([None, "", "nope"]), blank)),
    "data": (
        st.dictionaries(pg_text, json_value, max_size=3).map(json.dumps),
        st.one_of(st.none(), json_value.map(json.dumps)),
    ),
    "channels": (
        st.one_of(
            st.none(), st.lists(st.sampled_from(["email", "sms", "push"]), min_size=1, max_size=3)
        ),
        st.lists(st.one_of(st.sampled_from(["fax", "", "EMAIL"]), st.none(), pg_text), max_size=3),
    ),
    "address": (
        st.none(),
        st.one_of(st.sampled_from(["a@example.org", "+14155550123", "x@", "+0", " "]), pg_text),
    ),
    "category": (
        st.sampled_from([None, "orders"]),
        st.sampled_from(["Bad Name", "", "a" * 70]),
    ),
    "priority": (st.integers(-100, 100), st.integers(-(2**31), 2**31 - 1)),
    "send_at": (st.one_of(st.none(), moment(300)), st.one_of(moment(800), far_moment)),
    "expires_at": (st.none(), st.one_of(moment(800), far_moment)),
}


def _mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``good``, now and then ``odd``: calls often get deep into the function, and
    some have several odd arguments."""
    # Not st.one_of(good, odd): one_of would flatten odd's own branches and pick among
    # them all, which would make odd the usual case.
    return st.integers(0, 7).flatmap(lambda i: odd if i == 0 else good)


enqueue_args = st.fixed_dictionaries(
    {name: _mostly(good, odd) for name, (good, odd) in ARGUMENTS.items()}
)
good_args = st.fixed_dictionaries({name: good for name, (good, _) in ARGUMENTS.items()})


def _json_junk() -> st.SearchStrategy[Any]:
    """What a hand-written JSON item may hold where it should not."""
    return st.one_of(
        json_scalar,
        st.sampled_from(["high", "1.5", "next tuesday", "2026-13-45", "infinity", "", " "]),
        st.lists(json_scalar, max_size=2),
        st.dictionaries(pg_text, json_scalar, max_size=2),
    )


@dataclass(frozen=True)
class _Raw:
    """A junk value to put in an item as it is."""

    value: Any


@st.composite
def an_item(draw: st.DrawFn) -> Any:
    """enqueue's arguments as a JSON object, often with one odd or junk value, sometimes
    with a misspelt key; now and then not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_json_junk())
    args = draw(good_args)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(ARGUMENTS)))
        args[name] = draw(st.one_of(ARGUMENTS[name][1], _json_junk().map(_Raw)))
    item: dict[str, Any] = {}
    for name, value in args.items():
        if isinstance(value, _Raw):
            value = value.value
        elif name == "data" and value is not None:
            value = json.loads(value)  # an object in the item, not its text
        if value is not None or draw(st.booleans()):  # null or absent: both mean the default
            item[name] = value
    if draw(st.integers(0, 7)) == 0:
        item[draw(st.sampled_from(["prio", "expire_at", "subject"]))] = draw(json_scalar)
    return item


items = st.lists(an_item(), min_size=1, max_size=3)


def _counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM outbox.notifications), "
        "(SELECT count(*) FROM outbox.deliveries), (SELECT count(*) FROM outbox.events)"
    ).fetchone()


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and value.strip() == ""


def _check_written(conn: psycopg.Connection, nid: int) -> None:
    """What a successful call wrote can be delivered and read back."""
    message_id, recipient, send_at, expires_at = conn.execute(
        "SELECT n.message_id, r.external_id, isfinite(n.send_at) IS NOT FALSE, "
        "isfinite(n.expires_at) IS NOT FALSE FROM outbox.notifications n "
        "LEFT JOIN outbox.recipients r ON r.id = n.recipient_id WHERE n.id = %s",
        (nid,),
    ).fetchone()
    assert not _is_blank(message_id) and not _is_blank(recipient)
    assert send_at and expires_at, "an infinite send_at or expires_at was stored"
    due = conn.execute(
        "SELECT bool_and(next_attempt_at <= now() + interval '1 year') "
        "FROM outbox.deliveries WHERE notification_id = %s AND status = 'pending'",
        (nid,),
    ).fetchone()[0]
    assert due is not False, "a pending delivery is due beyond the horizon"


def _call(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> Any:
    """Run one call in a savepoint. Returns its value, or the OB error it raised, after
    checking that the error names a field and that nothing was written."""
    before = _counts(conn)
    conn.execute("SAVEPOINT fuzz")
    try:
        value = conn.execute(sql, params).fetchone()[0]
    except psycopg.Error as exc:
        conn.execute("ROLLBACK TO SAVEPOINT fuzz")
        assert exc.sqlstate is not None and exc.sqlstate.startswith("OB"), f"{exc.sqlstate}: {exc}"
        assert _counts(conn) == before, "a failed call left rows behind"
        return exc
    conn.execute("RELEASE SAVEPOINT fuzz")
    return value


def _names(exc: psycopg.Error, fields: set[str]) -> bool:
    """COLUMN is one of ``fields`` and the message names it ("channel" names channels)."""
    column = exc.diag.column_name
    if column not in fields:
        return False
    message = exc.diag.message_primary or ""
    stem = column[:-1] if column.endswith("s") else column
    # An unknown key is quoted as a JSON string, control characters escaped.
    return stem in message or json.dumps(column, ensure_ascii=False) in message


@pytest.fixture
def seen(conn):
    factories.seven(conn)
    nid = factories.enqueue_committed(conn, SEEN)
    return nid


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(args=enqueue_args)
def test_sql_enqueue_succeeds_or_names_a_field(conn, seen, args):
    try:
        result = _call(conn, ENQUEUE, args)
        if isinstance(result, psycopg.Error):
            event(f"refused {result.sqlstate} {result.diag.column_name}")
            assert _names(result, set(FIELDS)), (
                f"names no field: {result.diag.column_name}: {result}"
            )
        else:
            event("repeat" if result == seen else "enqueued")
            assert (result == seen) == (args["message_id"] == SEEN)
            _check_written(conn, result)
    finally:
        conn.rollback()


@settings(FUZZ, max_examples=200)
@given(items=items)
def test_sql_enqueue_many_succeeds_or_names_a_field_and_the_item(conn, seen, items):
    try:
        result = _call(conn, ENQUEUE_MANY, {"items": json.dumps(items)})
        if isinstance(result, psycopg.Error):
            event(f"refused {result.sqlstate} {result.diag.column_name}")
            keys = {k for item in items if isinstance(item, dict) for k in item}
            assert _names(result, set(FIELDS) | keys | {"items"}), (
                f"names no field: {result.diag.column_name}: {result}"
            )
            assert re.match(
                r"outbox\.enqueue_many: items\[\d\]", result.diag.message_primary or ""
            ), f"no item position: {result}"
        else:
            event("enqueued")
            assert len(result) == len(items)
            for item in items:
                assert isinstance(item, dict) and set(item) <= FIELDS, item
            for nid in result:
                _check_written(conn, nid)
    finally:
        conn.rollback()
