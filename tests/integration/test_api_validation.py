"""Bad input to the Python API: a ValidationError naming the field and the value's problem,
nothing written, and the caller's transaction still usable (checked before the round trip)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

import outbox
from outbox import calls, errors
from tests import factories

LATER = datetime.now(UTC) + timedelta(hours=1)


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _enqueue(**override: Any) -> Callable[[Any], Any]:
    kwargs: dict[str, Any] = dict(recipient="user-7", template="order_confirmed", data={"order": 1})
    kwargs.update(override)
    message_id = kwargs.pop("message_id", "bad-1")
    return lambda c: outbox.enqueue(c, message_id, **kwargs)


def _many(**override: Any) -> Callable[[Any], Any]:
    # A good item first: one bad item fails the whole call.
    good: dict[str, Any] = dict(
        message_id="good-0", recipient="user-7", template="order_confirmed", data={"order": 0}
    )
    item = dict(good, message_id="bad-1", **override)
    return lambda c: outbox.enqueue_many(c, [good, item])


# (call, field, message regex): each is refused in Python, before the round trip.
BAD_INPUT: dict[str, tuple[Callable[[Any], Any], str, str]] = {
    "nan_in_data": (
        _enqueue(data={"total": math.nan}),
        "data",
        r"data\['total'\] is nan, which JSON cannot hold",
    ),
    "infinity_in_nested_data": (
        _enqueue(data={"lines": [{"price": -math.inf}]}),
        "data",
        r"data\['lines'\]\[0\]\['price'\] is -inf",
    ),
    "nul_in_data_value": (
        _enqueue(data={"note": "a\x00b"}),
        "data",
        r"data\['note'\] contains a NUL character \(\\x00\) at position 1",
    ),
    "nul_in_data_key": (
        _enqueue(data={"k\x00": 1}),
        "data",
        r"data key 'k\\x00' contains a NUL character",
    ),
    "nul_in_message_id": (
        _enqueue(message_id="m\x00"),
        "message_id",
        r"message_id contains a NUL character",
    ),
    "nul_in_recipient": (
        _enqueue(recipient="user\x007"),
        "recipient",
        r"recipient contains a NUL character \(\\x00\) at position 4",
    ),
    "nul_in_template": (_enqueue(template="\x00"), "template", "template contains a NUL"),
    "nul_in_category": (_enqueue(category="orders\x00"), "category", "category contains a NUL"),
    "nul_in_address": (
        _enqueue(recipient=None, address="a@b.org\x00"),
        "address",
        "address contains a NUL",
    ),
    "nul_in_channel": (
        _enqueue(channels=["email\x00"]),
        "channels[0]",
        r"channels\[0\] contains a NUL",
    ),
    "lone_surrogate": (
        _enqueue(data={"name": "\ud800"}),
        "data",
        r"data\['name'\] contains a lone surrogate '\\ud800'",
    ),
    "data_too_deep": (
        _enqueue(data=_nested(33)),
        "data",
        r"data(\['a'\]){32} nests deeper than 32 levels",
    ),
    "data_cycle": (
        _enqueue(data=(lambda d: d.update(me=d) or d)({})),
        "data",
        "nests deeper than 32 levels",
    ),
    "data_too_big_multibyte": (
        _enqueue(data={"x": "é" * 33_000}),
        "data",
        "data is 66009 bytes as JSON, the limit is 65536",
    ),
    "set_in_data": (
        _enqueue(data={"tags": {"a", "b"}}),
        "data",
        r"data\['tags'\] is a set, which is not JSON-serialisable",
    ),
    "datetime_in_data": (
        _enqueue(data={"when": LATER}),
        "data",
        r"data\['when'\] is a datetime, .*; pass data\['when'\].isoformat\(\)",
    ),
    "non_string_key": (
        _enqueue(data={1: "a"}),
        "data",
        "data has a key int 1; JSON object keys must be strings",
    ),
    "huge_integer": (_enqueue(data={"n": 10**5000}), "data", "integer of over 4000 digits"),
    "data_not_a_mapping": (
        _enqueue(data="{}"),
        "data",
        r"data must be a JSON object \(a dict\), got str '\{\}'",
    ),
    "message_id_int": (
        _enqueue(message_id=42),
        "message_id",
        "message_id must be a string, got int 42",
    ),
    "message_id_none": (
        _enqueue(message_id=None),
        "message_id",
        "message_id must be a string, got NoneType None",
    ),
    "template_bytes": (
        _enqueue(template=b"order_confirmed"),
        "template",
        "template must be a string, got bytes",
    ),
    "recipient_int": (_enqueue(recipient=7), "recipient", "recipient must be a string, got int 7"),
    "priority_too_high": (
        _enqueue(priority=101),
        "priority",
        "priority must be between -100 and 100, got 101",
    ),
    "priority_huge": (_enqueue(priority=2**40), "priority", "between -100 and 100, got 1099511"),
    "priority_float": (
        _enqueue(priority=1.5),
        "priority",
        "priority must be an integer, got float 1.5",
    ),
    "priority_str": (_enqueue(priority="1"), "priority", "priority must be an integer, got str"),
    "priority_bool": (
        _enqueue(priority=True),
        "priority",
        "priority must be an integer, got bool True",
    ),
    "send_at_naive": (
        _enqueue(send_at=datetime(2030, 1, 1, 9, 0)),
        "send_at",
        r"send_at is a naive datetime \(2030-01-01T09:00:00\); give it a time zone",
    ),
    "expires_at_str": (
        _enqueue(expires_at="2030-01-01T09:00:00Z"),
        "expires_at",
        "expires_at must be a datetime with a time zone, got str",
    ),
    "expires_at_epoch": (
        _enqueue(expires_at=1893456000),
        "expires_at",
        "expires_at must be a datetime with a time zone, got int",
    ),
    "channels_int": (
        _enqueue(channels=3),
        "channels",
        "channels must be a channel name or a list of them, got int 3",
    ),
    "channels_dict": (
        _enqueue(channels={"email": True}),
        "channels",
        "channels must be a channel name or a list of them, got dict",
    ),
    "channels_with_none": (
        _enqueue(channels=["email", None]),
        "channels[1]",
        r"channels\[1\] must be a string, got NoneType",
    ),
    "many_unknown_key": (
        _many(subject="hi"),
        "subject",
        r"notifications\[1\] has unknown field\(s\) \['subject'\]",
    ),
    "many_missing_message_id": (
        lambda c: outbox.enqueue_many(c, [{"template": "t"}]),
        "message_id",
        r"notifications\[0\] has no message_id",
    ),
    "many_item_not_a_mapping": (
        lambda c: outbox.enqueue_many(c, [("m", "t")]),
        "notifications",
        r"notifications\[0\] must be a mapping",
    ),
    "many_bad_priority": (
        _many(priority=True),
        "priority",
        r"notifications\[1\]: priority must be an integer, got bool",
    ),
    "many_naive_send_at": (
        _many(send_at=datetime(2030, 1, 1)),
        "send_at",
        r"notifications\[1\]: send_at is a naive datetime",
    ),
    "many_nan": (_many(data={"x": math.nan}), "data", r"notifications\[1\]: data\['x'\] is nan"),
    "many_not_a_list": (
        lambda c: outbox.enqueue_many(c, {"message_id": "m"}),
        "notifications",
        "notifications must be a list of mappings, got dict",
    ),
    "upsert_recipient_none": (
        lambda c: outbox.upsert_recipient(c, None),
        "recipient",
        "recipient must be a string, got NoneType",
    ),
    "upsert_email_nul": (
        lambda c: outbox.upsert_recipient(c, "u", email="a@b.c\x00"),
        "email",
        "email contains a NUL",
    ),
    "upsert_quiet_hours_not_pair": (
        lambda c: outbox.upsert_recipient(c, "u", quiet_hours=(time(22),)),
        "quiet_hours",
        r"quiet_hours must be a \(start, end\) pair of times, got tuple",
    ),
    "upsert_quiet_hours_str": (
        lambda c: outbox.upsert_recipient(c, "u", quiet_hours=("22:00", "07:00")),
        "quiet_hours",
        "quiet_hours must be a datetime.time, got str '22:00'",
    ),
    "upsert_quiet_hours_aware": (
        lambda c: outbox.upsert_recipient(c, "u", quiet_hours=(time(22, tzinfo=UTC), time(7))),
        "quiet_hours",
        "must be a local time without tzinfo",
    ),
    "register_device_token_int": (
        lambda c: outbox.register_device(c, "user-7", 12345678, "apns"),
        "token",
        "token must be a string, got int",
    ),
    "register_device_nul": (
        lambda c: outbox.register_device(c, "user-7", "tok\x0012345", "apns"),
        "token",
        "token contains a NUL",
    ),
    "deactivate_device_none": (
        lambda c: outbox.deactivate_device(c, None),
        "token",
        "token must be a string, got NoneType",
    ),
    "set_preference_int_flag": (
        lambda c: outbox.set_preference(c, "user-7", "email", opted_in=0),
        "opted_in",
        "opted_in must be True or False, got int 0",
    ),
    "set_preference_str_flag": (
        lambda c: outbox.set_preference(c, "user-7", "email", opted_in="no"),
        "opted_in",
        "opted_in must be True or False, got str 'no'",
    ),
    "cancel_int": (
        lambda c: outbox.cancel(c, 42),
        "message_id",
        "message_id must be a string, got int 42",
    ),
    "create_template_int_flag": (
        lambda c: outbox.create_template(c, "k", "sms", "hi", activate=1),
        "activate",
        "activate must be True or False, got int 1",
    ),
    "create_template_nul_body": (
        lambda c: outbox.create_template(c, "k", "sms", "h\x00i"),
        "body",
        "body contains a NUL",
    ),
    # I5: a template the worker could not render is refused with the field and the line.
    "create_template_does_not_compile": (
        lambda c: outbox.create_template(c, "k", "sms", "Hi\n{{ oops"),
        "body",
        r"body syntax error: unexpected end of template.* \(line 2\)",
    ),
    "create_template_subject_does_not_compile": (
        lambda c: outbox.create_template(c, "k", "email", "ok", subject="{% if %}"),
        "subject",
        r"subject syntax error: .* \(line 1\)",
    ),
    "create_template_over_256_kib": (
        lambda c: outbox.create_template(
            c, "k", "email", "ok", subject="s", html_body="é" * 131073
        ),
        "html_body",
        r"html_body source is 262,146 bytes, over the limit of 262,144 \(256 KiB\)",
    ),
    "activate_template_bool_version": (
        lambda c: outbox.activate_template(c, "order_confirmed", "sms", True),
        "version",
        "version must be an integer, got bool True",
    ),
    "activate_template_version_huge": (
        lambda c: outbox.activate_template(c, "order_confirmed", "sms", 2**31),
        "version",
        "version must be between 1 and 2147483647, got 2147483648",
    ),
}


@pytest.fixture
def seven(conn):
    return factories.seven(conn)


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused_before_the_round_trip(conn, seven, case):
    call, field, message = BAD_INPUT[case]
    with pytest.raises(errors.ValidationError, match=message) as info:
        call(conn)
    assert info.value.field == field
    # Refused in Python: no driver error behind it, and the transaction is not aborted.
    assert info.value.__cause__ is None
    assert conn.info.transaction_status != TransactionStatus.INERROR
    # The caller's transaction goes on: enqueue and commit work, and only that row exists.
    outbox.enqueue(
        conn, "after-the-error", recipient="user-7", template="order_confirmed", data={"order": 2}
    )
    conn.commit()
    rows = conn.execute("SELECT message_id FROM outbox.notifications").fetchall()
    assert rows == [("after-the-error",)]
    recipients = conn.execute("SELECT external_id FROM outbox.recipients").fetchall()
    assert recipients == [("user-7",)]


def test_data_at_the_limits_is_accepted(conn, seven):
    """The depth and size limits are limits, not off by one."""
    outbox.enqueue(
        conn,
        "deep",
        recipient="user-7",
        template="order_confirmed",
        data=dict(_nested(32), order=1),
    )
    # The size the SQL function measures (octet_length(data::text)), exactly at its limit,
    # with two-byte characters so that bytes, not characters, are what is counted.
    room = calls.MAX_DATA_BYTES - len('{"x": "", "order": 1}')
    data = {"x": "é" * (room // 2) + "a" * (room % 2), "order": 1}
    outbox.enqueue(conn, "big", recipient="user-7", template="order_confirmed", data=data)
    conn.commit()
    rows = conn.execute(
        "SELECT message_id, octet_length(data::text), data #> "
        "'{a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a}' "
        "FROM outbox.notifications ORDER BY id"
    ).fetchall()
    assert rows[0][0] == "deep" and rows[0][2] == {}  # 31 keys down: the 32nd level
    assert rows[1][:2] == ("big", calls.MAX_DATA_BYTES)


def test_python_size_check_agrees_with_the_sql_function(conn, seven):
    """One byte over: refused in Python with the same limit the SQL function enforces."""
    text = "a" * (calls.MAX_DATA_BYTES - len('{"x": ""}') + 1)
    with pytest.raises(errors.ValidationError, match="65537 bytes as JSON, the limit is 65536"):
        outbox.enqueue(
            conn, "big", recipient="user-7", template="order_confirmed", data={"x": text}
        )
    with pytest.raises(psycopg.Error) as info:
        conn.execute(
            "SELECT outbox.enqueue(message_id => 'big', recipient => 'user-7', "
            "template => 'order_confirmed', data => jsonb_build_object('x', %s::text))",
            (text,),
        )
    assert info.value.sqlstate == "OB001" and "the limit is 65536" in str(info.value)


@pytest.mark.parametrize(
    ("priority", "accepted"), [(-100, True), (100, True), (101, False), (-101, False)]
)
def test_python_priority_range_is_the_sql_functions(conn, seven, priority, accepted):
    """The SQL function is the reference; the Python check must refuse exactly what it does."""
    conn.execute("SAVEPOINT s")
    try:
        conn.execute(
            "SELECT outbox.enqueue(message_id => 'p', recipient => 'user-7', "
            "template => 'order_confirmed', priority => %s)",
            (priority,),
        )
        sql_accepted = True
    except psycopg.Error as exc:
        assert exc.sqlstate == "OB001"
        sql_accepted = False
    conn.execute("ROLLBACK TO SAVEPOINT s")
    assert sql_accepted is accepted
    if accepted:
        outbox.enqueue(conn, "p", recipient="user-7", template="order_confirmed", priority=priority)
    else:
        with pytest.raises(errors.ValidationError, match="between -100 and 100") as info:
            outbox.enqueue(
                conn, "p", recipient="user-7", template="order_confirmed", priority=priority
            )
        assert info.value.field == "priority"


def test_good_unusual_input_is_accepted(conn, seven):
    """What the checks must not refuse: tuples, sets of channels, a single channel name,
    non-ASCII text, integer-like priorities, aware datetimes in enqueue_many."""
    import enum

    class Level(enum.IntEnum):
        HIGH = 50

    outbox.enqueue(
        conn,
        "t-1",
        recipient="user-7",
        template="order_confirmed",
        channels=("email", "sms"),
        data={"lines": ("a", "b"), "ünï": "çødé ✓"},
        priority=Level.HIGH,
    )
    outbox.enqueue(
        conn,
        "t-2",
        recipient="user-7",
        template="order_confirmed",
        channels={"push", "email"},
        send_at=LATER,
        expires_at=LATER + timedelta(1),
    )
    outbox.enqueue(conn, "t-3", recipient="user-7", template="order_confirmed", channels="sms")
    outbox.enqueue_many(
        conn,
        [
            {
                "message_id": "t-4",
                "recipient": "user-7",
                "template": "order_confirmed",
                "send_at": LATER,
                "expires_at": LATER + timedelta(hours=1),
                "channels": "email",
            },
        ],
    )
    conn.commit()
    rows = conn.execute(
        "SELECT message_id, channels::text[], priority, data FROM outbox.notifications ORDER BY id"
    ).fetchall()
    assert rows == [
        ("t-1", ["email", "sms"], 50, {"lines": ["a", "b"], "ünï": "çødé ✓"}),
        ("t-2", ["email", "push"], 0, {}),
        ("t-3", ["sms"], 0, {}),
        ("t-4", ["email"], 0, {}),
    ]
    send_at = conn.execute(
        "SELECT send_at FROM outbox.notifications WHERE message_id = 't-4'"
    ).fetchone()[0]
    assert send_at == LATER


def test_repeat_with_bad_input_is_refused_not_answered(conn, seven):
    """Idempotency answers a repeated message id, but only for a call that is well formed."""
    first = outbox.enqueue(conn, "m", recipient="user-7", template="order_confirmed")
    conn.commit()
    with pytest.raises(errors.ValidationError, match="priority"):
        outbox.enqueue(conn, "m", recipient="user-7", template="order_confirmed", priority=1.5)
    assert outbox.enqueue(conn, "m", recipient="user-7", template="order_confirmed") == first


def test_a_savepoint_keeps_the_transaction_after_an_sql_side_refusal(conn, seven):
    """The recipe docs/python-api.md gives for errors only the SQL function can see."""
    outbox.enqueue(conn, "before", recipient="user-7", template="order_confirmed")
    with (
        pytest.raises(errors.UnknownRecipient, match="unknown recipient 'ghost'"),
        conn.transaction(),
    ):
        outbox.enqueue(conn, "ghost-1", recipient="ghost", template="order_confirmed")
    outbox.enqueue(conn, "after", recipient="user-7", template="order_confirmed")
    conn.commit()
    rows = conn.execute("SELECT message_id FROM outbox.notifications ORDER BY id").fetchall()
    assert rows == [("before",), ("after",)]
