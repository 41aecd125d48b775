"""The SQL functions' own input checks, called from plain SQL as a producer in any
language calls them: every bad argument is an OB00x error whose COLUMN names it and
whose message says what was wrong (for enqueue_many: and in which item), and nothing
is written. Findings I1, I2, I4, the blank ids and D1 of
../shared/findings/reliability-2026-12.md."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import outbox
from outbox import errors
from outbox.templates import locale_chain
from tests import factories

ENQUEUE = (
    "SELECT outbox.enqueue(message_id => %(message_id)s, recipient => %(recipient)s, "
    "template => %(template)s, data => %(data)s::jsonb, channels => %(channels)s::text[], "
    "address => %(address)s, category => %(category)s, priority => %(priority)s, "
    "send_at => %(send_at)s::timestamptz, expires_at => %(expires_at)s::timestamptz)"
)


def _args(**override: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        message_id="m-1",
        recipient="user-7",
        template="order_confirmed",
        data='{"order": 1}',
        channels=None,
        address=None,
        category=None,
        priority=0,
        send_at=None,
        expires_at=None,
    )
    args.update(override)
    return args


def _counts(conn) -> tuple[int, int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM outbox.notifications), "
        "(SELECT count(*) FROM outbox.deliveries), (SELECT count(*) FROM outbox.events)"
    ).fetchone()


def _refused(conn, sql: str, params: Any) -> psycopg.Error:
    """Run ``sql``; it must fail with class OB and write nothing. Returns the error."""
    before = _counts(conn)
    conn.execute("SAVEPOINT refused")
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql, params)
    conn.execute("ROLLBACK TO SAVEPOINT refused")
    assert info.value.sqlstate is not None and info.value.sqlstate.startswith("OB"), (
        info.value.sqlstate,
        str(info.value),
    )
    assert _counts(conn) == before
    return info.value


def _many(*items: Any) -> tuple[str, dict[str, str]]:
    return "SELECT outbox.enqueue_many(%(items)s::jsonb)", {"items": json.dumps(list(items))}


GOOD_ITEM = {"message_id": "good-0", "recipient": "user-7", "template": "order_confirmed"}


@pytest.fixture
def seven(conn):
    return factories.seven(conn)


# -- I1: send_at and expires_at are finite and within a year of now ------------------


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        (dict(send_at="infinity"), "send_at", r"send_at must be a finite time, got infinity"),
        (dict(send_at="-infinity"), "send_at", r"send_at must be a finite time, got -infinity"),
        (dict(send_at="294276-01-01 00:00Z"), "send_at", r"more than a year ahead"),
        (dict(send_at="2000-01-01 00:00Z"), "send_at", r"more than a year ago"),
        (dict(expires_at="infinity"), "expires_at", r"expires_at must be a finite time"),
        (dict(expires_at="-infinity"), "expires_at", r"expires_at must be a finite time"),
        (dict(expires_at="294276-01-01 00:00Z"), "expires_at", r"more than a year after"),
        (dict(expires_at="4713-01-01 00:00:00+00 BC"), "expires_at", r"more than a year ago"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_absurd_send_at_or_expires_at_is_refused(conn, seven, override, field, message):
    exc = _refused(conn, ENQUEUE, _args(**override))
    assert exc.sqlstate == "OB001"
    assert exc.diag.column_name == field
    assert exc.diag.message_primary is not None
    assert re.search(message, exc.diag.message_primary), exc.diag.message_primary


def test_the_horizon_is_one_year_either_side(conn, seven):
    now = conn.execute("SELECT now()").fetchone()[0]
    year = conn.execute("SELECT now() + interval '1 year' - now()").fetchone()[0]
    for name, send_at in [
        ("near-ahead", now + year - timedelta(minutes=1)),
        ("near-ago", now - year + timedelta(minutes=1)),
    ]:
        conn.execute(ENQUEUE, _args(message_id=name, send_at=send_at))
    for name, send_at in [
        ("far-ahead", now + year + timedelta(minutes=1)),
        ("far-ago", now - year - timedelta(minutes=1)),
    ]:
        assert (
            _refused(conn, ENQUEUE, _args(message_id=name, send_at=send_at)).diag.column_name
            == "send_at"
        )
    # expires_at may be a year after the send, wherever the send is; a past one is recorded expired.
    conn.execute(
        ENQUEUE,
        _args(
            message_id="late-expiry",
            send_at=now + timedelta(days=300),
            expires_at=now + timedelta(days=660),
        ),
    )
    conn.execute(ENQUEUE, _args(message_id="expired", expires_at=now - timedelta(days=1)))
    rows = conn.execute(
        "SELECT n.message_id, bool_and(d.next_attempt_at <= now() + interval '1 year'), "
        "array_agg(DISTINCT d.status::text) FROM outbox.notifications n "
        "JOIN outbox.deliveries d ON d.notification_id = n.id GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("expired", True, ["expired"]),
        ("late-expiry", True, ["pending"]),
        ("near-ago", True, ["pending"]),
        ("near-ahead", True, ["pending"]),
    ]


def test_enqueue_many_refuses_an_infinite_send_at_naming_the_item(conn, seven):
    exc = _refused(conn, *_many(GOOD_ITEM, dict(GOOD_ITEM, message_id="m-2", send_at="infinity")))
    assert (exc.sqlstate, exc.diag.column_name) == ("OB001", "send_at")
    assert exc.diag.message_primary.startswith(
        "outbox.enqueue_many: items[1]: send_at must be a finite"
    )


def test_python_api_refuses_a_send_at_beyond_the_horizon(conn, seven):
    with pytest.raises(errors.ValidationError, match="more than a year ahead") as info:
        outbox.enqueue(
            conn,
            "m-far",
            recipient="user-7",
            template="order_confirmed",
            send_at=datetime(9999, 12, 31, tzinfo=UTC),
        )
    assert info.value.field == "send_at"
    conn.rollback()
    with pytest.raises(errors.ValidationError, match=r"items\[0\]: expires_at") as info:
        outbox.enqueue_many(
            conn, [dict(GOOD_ITEM, expires_at=datetime.now(UTC) + timedelta(days=400))]
        )
    assert info.value.field == "expires_at"


# -- I2 / I4: enqueue_many checks each item's keys and types -------------------------

BAD_ITEMS = [
    (
        {"prio": 5},
        "OB001",
        "prio",
        r'items\[1\] has unknown field\(s\) "prio"; expected some of address, ',
    ),
    (
        {"expire_at": "2030-01-01"},
        "OB001",
        "expire_at",
        r'items\[1\] has unknown field\(s\) "expire_at"',
    ),
    (
        {"priority": "high"},
        "OB001",
        "priority",
        r'items\[1\]: priority must be an integer, got "high"',
    ),
    ({"priority": 1.5}, "OB001", "priority", r"items\[1\]: priority must be an integer, got 1\.5"),
    ({"priority": True}, "OB001", "priority", r"items\[1\]: priority must be an integer, got true"),
    ({"priority": 1e10}, "OB001", "priority", r"items\[1\]: priority must be between -100 and 100"),
    (
        {"priority": "99999999999"},
        "OB001",
        "priority",
        r"items\[1\]: priority must be between -100",
    ),
    (
        {"send_at": "next tuesday"},
        "OB001",
        "send_at",
        r'items\[1\]: send_at "next tuesday" is not a timestamp',
    ),
    (
        {"send_at": "2026-13-45"},
        "OB001",
        "send_at",
        r'items\[1\]: send_at "2026-13-45" is not a timestamp',
    ),
    (
        {"expires_at": 1893456000},
        "OB001",
        "expires_at",
        r"items\[1\]: expires_at must be a string \(a timestamp",
    ),
    (
        {"message_id": 42},
        "OB001",
        "message_id",
        r"items\[1\]: message_id must be a string, got number",
    ),
    (
        {"recipient": ["user-7"]},
        "OB001",
        "recipient",
        r"items\[1\]: recipient must be a string, got array",
    ),
    (
        {"channels": 5},
        "OB001",
        "channels",
        r"items\[1\]: channels must be a channel name or an array of them",
    ),
    (
        {"channels": ["email", 1]},
        "OB001",
        "channels",
        r"items\[1\]: channels\[1\] must be a string, got number",
    ),
    ({"channels": ["fax"]}, "OB004", "channels", r"items\[1\]: unknown channel 'fax'"),
    ({"recipient": "ghost"}, "OB002", "recipient", r"items\[1\]: unknown recipient 'ghost'"),
    ({"template": "nope"}, "OB003", "template", r"items\[1\]: unknown template 'nope'"),
    ({"data": [1]}, "OB001", "data", r"items\[1\]: data must be a JSON object, got array"),
]


@pytest.mark.parametrize(
    ("override", "sqlstate", "field", "message"),
    BAD_ITEMS,
    ids=[json.dumps(b[0]) for b in BAD_ITEMS],
)
def test_enqueue_many_names_the_field_and_the_item(conn, seven, override, sqlstate, field, message):
    # A good item first: one bad item fails the whole call, the good one included.
    exc = _refused(conn, *_many(GOOD_ITEM, {**GOOD_ITEM, "message_id": "bad-1", **override}))
    assert (exc.sqlstate, exc.diag.column_name) == (sqlstate, field)
    assert exc.diag.message_primary.startswith("outbox.enqueue_many: items[1]")
    assert re.search(message, exc.diag.message_primary), exc.diag.message_primary


@pytest.mark.parametrize("item", [[1], "x", 3, None])
def test_enqueue_many_refuses_an_item_that_is_not_an_object(conn, seven, item):
    exc = _refused(conn, *_many(GOOD_ITEM, item))
    assert (exc.sqlstate, exc.diag.column_name) == ("OB001", "items")
    assert "items[1] is not a JSON object" in exc.diag.message_primary


def test_enqueue_many_takes_what_enqueue_takes(conn, seven):
    """Integers as numbers or digit strings, a channel name or a list, null as absent."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    sql, params = _many(
        dict(GOOD_ITEM, priority=5, channels="email", send_at=later, data=None, category=None),
        dict(
            GOOD_ITEM, message_id="g-1", priority="-7", channels=["sms", "push"], expires_at=later
        ),
        dict(GOOD_ITEM, message_id="g-2", priority=10.0, address=None, data={"order": 3}),
    )
    ids = conn.execute(sql, params).fetchone()[0]
    assert len(ids) == 3
    rows = conn.execute(
        "SELECT message_id, priority, channels::text[], data FROM outbox.notifications ORDER BY id"
    ).fetchall()
    assert rows == [
        ("good-0", 5, ["email"], {}),
        ("g-1", -7, ["sms", "push"], {}),
        ("g-2", 10, ["email", "sms", "push"], {"order": 3}),
    ]


# -- blank ids ----------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" ", "   ", "\t\n", "\u00a0", "\u3000 \u2003"])
def test_blank_message_id_recipient_and_address_are_refused(conn, seven, blank):
    for field, override in [
        ("message_id", dict(message_id=blank)),
        ("recipient", dict(recipient=blank)),
        ("address", dict(recipient=None, address=blank, channels=["email"])),
        ("template", dict(template=blank)),
    ]:
        exc = _refused(conn, ENQUEUE, _args(**override))
        assert (exc.sqlstate, exc.diag.column_name) == ("OB001", field)
        assert f"{field} is blank" in exc.diag.message_primary
    exc = _refused(conn, "SELECT outbox.upsert_recipient(%s, email => 'b@example.com')", (blank,))
    assert (exc.sqlstate, exc.diag.column_name) == ("OB001", "recipient")
    assert "recipient is blank" in exc.diag.message_primary


def test_python_api_refuses_a_blank_recipient(conn):
    with pytest.raises(errors.ValidationError, match="recipient is blank") as info:
        outbox.upsert_recipient(conn, "  ", email="b@example.com")
    assert info.value.field == "recipient"


# -- D1: a repeat is checked for form before it is answered --------------------------


@pytest.mark.parametrize(
    ("override", "sqlstate", "field"),
    [
        (dict(priority=101), "OB001", "priority"),
        (dict(channels=["fax"]), "OB004", "channels"),
        (dict(recipient=None, address="not-an-email@"), "OB001", "address"),
        (dict(address="a@example.org"), "OB001", "recipient"),
        (dict(category="Bad Name"), "OB001", "category"),
        (dict(data="[1]"), "OB001", "data"),
        (dict(send_at="infinity"), "OB001", "send_at"),
        (dict(template=""), "OB001", "template"),
    ],
)
def test_a_malformed_repeat_is_refused_even_when_its_message_id_exists(
    conn, seven, override, sqlstate, field
):
    conn.execute(ENQUEUE, _args())
    conn.commit()
    exc = _refused(conn, ENQUEUE, _args(**override))
    assert (exc.sqlstate, exc.diag.column_name) == (sqlstate, field)


def test_a_well_formed_repeat_is_answered_before_the_checks_against_stored_rows(conn, seven):
    """A retry of a call that once succeeded keeps succeeding: what the repeat names may
    have changed since (template deactivated, recipient gone), and its content is not
    compared. The horizon, measured on the clock, is in this group too."""
    first = conn.execute(ENQUEUE, _args()).fetchone()[0]
    conn.commit()
    for override in [
        dict(template="gone"),
        dict(recipient="ghost"),
        dict(send_at=(datetime.now(UTC) + timedelta(days=800)).isoformat()),
        dict(data='{"order": 999}'),
    ]:
        assert conn.execute(ENQUEUE, _args(**override)).fetchone()[0] == first
    assert _counts(conn)[0] == 1


# -- upsert_recipient's locale --------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "fr",
        "fr-CA",
        "fr_CA",
        "FR-ca",
        "fr_ca",
        "zh-hant-tw",
        "zh_Hant_TW",
        "sr-latn",
        "es-419",
        "de-CH-1996",
        "en-US-posix",
        "default",
        "DEFAULT",
    ],
)
def test_recipient_locale_is_stored_in_its_canonical_form(conn, given):
    """The canonical BCP 47 form (language lower, script title, region upper), the one
    outbox.templates.locale_chain() gives and the templates' locale column matches on."""
    outbox.upsert_recipient(conn, "u", locale=given)
    stored = conn.execute(
        "SELECT locale FROM outbox.recipients WHERE external_id = 'u'"
    ).fetchone()[0]
    assert stored == locale_chain(given)[0]


@pytest.mark.parametrize(
    "given", ["", "f", "français", "fr--CA", "fr-", "fr_CA.UTF-8", "fr CA", "12"]
)
def test_bad_recipient_locale_is_named_as_given(conn, given):
    exc = _refused(conn, "SELECT outbox.upsert_recipient('u', locale => %s)", (given,))
    assert (exc.sqlstate, exc.diag.column_name) == ("OB001", "locale")
    assert f"locale '{given}' is not a language tag" in exc.diag.message_primary
    assert "like fr or fr-CA" in exc.diag.message_primary


# -- D1: concurrent enqueues of one message id under REPEATABLE READ -----------------


def test_concurrent_enqueue_under_repeatable_read_is_a_serialization_failure(db_url, conn, seven):
    """Documented in docs/python-api.md: the loser retries its transaction and then gets
    the winner's id."""
    first = psycopg.connect(db_url)
    winner = first.execute(ENQUEUE, _args(message_id="race")).fetchone()[0]
    outcome: list[Any] = []

    def second() -> None:
        with psycopg.connect(db_url) as c:
            c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                c.execute(ENQUEUE, _args(message_id="race", data='{"order": 2}'))
            except psycopg.errors.SerializationFailure as exc:
                outcome.append(exc)
                c.rollback()
                outcome.append(c.execute(ENQUEUE, _args(message_id="race")).fetchone()[0])

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive(), "the second enqueue should wait for the first transaction"
    first.commit()
    first.close()
    thread.join(timeout=10)
    assert len(outcome) == 2 and isinstance(outcome[0], psycopg.errors.SerializationFailure)
    assert outcome[1] == winner
