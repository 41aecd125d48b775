"""Fuzzing enqueue's Python arguments against the real database: every call either
succeeds or raises outbox.ValidationError naming one of its fields, and a failed call
leaves no row behind (and, when refused in Python, leaves the transaction usable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg.pq import TransactionStatus

import outbox
from outbox import calls, errors
from tests import factories

# Text with the characters PostgreSQL and UTF-8 refuse, which st.text() leaves out.
nasty_text = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", ""])

# Junk of every kind a caller could pass by mistake.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    nasty_text,
    st.binary(max_size=8),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.lists(st.integers(), max_size=3),
    st.sets(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)

# JSON-ish values with the traps jsonb and json.dumps fall into: NaN and infinities,
# NUL and lone surrogates in text and keys, tuples, sets, datetimes, non-string keys.
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    nasty_text,
    st.datetimes(),
    st.sets(st.integers(), max_size=2),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(
            st.one_of(st.text(max_size=8), nasty_text, st.integers()), children, max_size=4
        ),
    ),
    max_leaves=30,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``good``, sometimes junk: so that several arguments vary in one call and
    calls get far enough to reach the database."""
    # Not st.one_of(good, ..., junk): one_of flattens junk's own branches and picks
    # among them all, which would make junk the usual case.
    return st.integers(0, 5).flatmap(lambda i: junk if i == 0 else good)


# Around the one-year horizon of send_at and expires_at (either side of it).
aware = st.datetimes(
    min_value=datetime.now() - timedelta(days=800),
    max_value=datetime.now() + timedelta(days=800),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))]),
)

enqueue_kwargs = st.fixed_dictionaries(
    {
        "message_id": mostly(st.text(min_size=1, max_size=300)),
        "template": mostly(st.sampled_from(["order_confirmed"] * 5 + ["nope", ""])),
        "recipient": mostly(st.sampled_from(["user-7"] * 5 + ["ghost", None])),
        "data": mostly(
            st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_value, max_size=5))
        ),
        "channels": mostly(
            st.one_of(
                st.sampled_from([None, "email", ("email", "sms"), ["push"], ["fax"], []]),
                st.lists(st.sampled_from(["email", "sms", "push"]), max_size=3),
            )
        ),
        "address": mostly(st.sampled_from([None] * 6 + ["a@example.org", "+14155550123", "x@"])),
        "category": mostly(st.sampled_from([None, "orders", "Bad Name"])),
        "priority": mostly(st.integers(min_value=-150, max_value=150)),
        "send_at": mostly(st.one_of(st.none(), aware)),
        "expires_at": mostly(st.one_of(st.none(), aware)),
    }
)

FIELDS = calls.ENQUEUE_FIELDS


def _field_is_named(exc: errors.ValidationError) -> bool:
    # channels[2] names the channels argument, item and all.
    return exc.field is not None and exc.field.split("[")[0] in FIELDS


def _notifications(conn: Any, message_id: Any) -> int:
    if not isinstance(message_id, str) or "\x00" in message_id:
        return conn.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0]
    return conn.execute(
        "SELECT count(*) FROM outbox.notifications WHERE message_id = %s",
        (message_id.encode("utf-8", "replace").decode(),),
    ).fetchone()[0]


@pytest.fixture
def seven(conn):
    return factories.seven(conn)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kwargs=enqueue_kwargs)
def test_enqueue_succeeds_or_names_a_field(conn, seven, kwargs):
    message_id = kwargs.pop("message_id")
    try:
        try:
            nid = outbox.enqueue(conn, message_id, **kwargs)
        except errors.ValidationError as exc:
            assert _field_is_named(exc), f"{exc!r} names no field of enqueue ({exc.field!r})"
            assert str(exc), "an error without a message"
            event(f"refused: {exc.field} ({'python' if exc.__cause__ is None else 'sql'})")
            if exc.__cause__ is None:
                # Refused in Python: nothing was sent, the transaction goes on, no row.
                assert conn.info.transaction_status != TransactionStatus.INERROR
                assert _notifications(conn, message_id) == 0
            else:
                # Refused by the SQL function: the statement failed, so nothing was written.
                conn.rollback()
                assert _notifications(conn, message_id) == 0
        else:
            event("enqueued")
            assert isinstance(nid, int)
            assert conn.execute(
                "SELECT message_id FROM outbox.notifications WHERE id = %s", (nid,)
            ).fetchone() == (message_id,)
    finally:
        conn.rollback()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=st.lists(enqueue_kwargs, min_size=1, max_size=3),
    extra=st.dictionaries(st.text(max_size=6), junk, max_size=1),
)
def test_enqueue_many_succeeds_or_names_a_field(conn, seven, items, extra):
    if items:
        items[-1].update(extra)
    try:
        try:
            ids = outbox.enqueue_many(conn, items)
        except errors.ValidationError as exc:
            named = (
                exc.field in FIELDS
                or exc.field == "notifications"
                or (exc.field is not None and exc.field.split("[")[0] in FIELDS)
            )
            assert named or exc.field in extra, f"{exc!r} names no field ({exc.field!r})"
            if exc.__cause__ is None:
                assert conn.info.transaction_status != TransactionStatus.INERROR
            else:
                conn.rollback()
            assert conn.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0] == 0
        else:
            assert len(ids) == len(items) and all(isinstance(i, int) for i in ids)
    finally:
        conn.rollback()
