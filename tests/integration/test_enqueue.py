"""The enqueue path against a real PostgreSQL: atomicity, idempotency, fan-out, validation."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import outbox
from outbox import errors
from tests import factories


def _count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM outbox.{table}").fetchone()[0]


@pytest.fixture
def setup(conn):
    """A recipient with email, phone and two devices, and templates for all channels; committed."""
    user = factories.recipient(conn, "user-7")
    factories.device(conn, user, "apns", "apns-token-0001")
    factories.device(conn, user, "fcm", "fcm-token-0002")
    factories.templates(conn)
    conn.commit()
    return user


def test_rollback_writes_nothing(conn, setup):
    outbox.enqueue(conn, "m-1", recipient=setup, template="order_confirmed", data={"order": 1})
    conn.rollback()
    assert _count(conn, "notifications") == 0
    assert _count(conn, "deliveries") == 0
    assert _count(conn, "events") == 0


def test_commit_writes_rows_and_notifies_listener(conn, db_url, setup):
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN outbox_work")
        nid = outbox.enqueue(
            conn, "m-1", recipient=setup, template="order_confirmed", data={"order": 1}
        )
        # Nothing is announced before commit.
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        conn.commit()
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in got] == ["outbox_work"]
    assert isinstance(nid, int)
    rows = conn.execute(
        "SELECT channel::text, destination, status::text FROM outbox.deliveries "
        "WHERE notification_id = %s ORDER BY id",
        (nid,),
    ).fetchall()
    assert rows == [
        ("email", "user-7@example.com", "pending"),
        ("sms", conn.execute("SELECT phone FROM outbox.recipients").fetchone()[0], "pending"),
        ("push", "apns-token-0001", "pending"),
        ("push", "fcm-token-0002", "pending"),
    ]
    kinds = conn.execute("SELECT kind, count(*) FROM outbox.events GROUP BY kind").fetchall()
    assert kinds == [("created", 4)]


def test_one_notify_per_transaction_however_many_enqueues(conn, db_url, setup):
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN outbox_work")
        for i in range(20):
            outbox.enqueue(
                conn, f"m-{i}", recipient=setup, template="order_confirmed", data={"order": i}
            )
        conn.commit()
        got = list(listener.notifies(timeout=0.5))
    assert len(got) == 1


def test_notify_can_be_turned_off_for_bulk_loads(conn, db_url, setup):
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN outbox_work")
        conn.execute("SET LOCAL outbox.notify = 'off'")
        outbox.enqueue(
            conn, "m-quiet", recipient=setup, template="order_confirmed", data={"order": 1}
        )
        conn.commit()
        assert list(listener.notifies(timeout=0.3)) == []
    assert _count(conn, "deliveries") == 4


def test_reenqueue_is_a_noop_returning_the_first_id(conn, setup):
    first = outbox.enqueue(
        conn, "m-1", recipient=setup, template="order_confirmed", data={"order": 1}
    )
    conn.commit()
    again = outbox.enqueue(
        conn,
        "m-1",
        recipient=setup,
        template="order_confirmed",
        data={"order": 999},
        channels=["email"],
    )
    conn.commit()
    assert again == first
    assert _count(conn, "notifications") == 1
    assert _count(conn, "deliveries") == 4
    assert conn.execute("SELECT data FROM outbox.notifications").fetchone()[0] == {"order": 1}


def test_concurrent_enqueue_of_one_message_id_creates_one_notification(db_url, setup):
    """Two producers race on one message id: the loser waits for the winner's commit and
    gets the winner's id."""
    barrier = threading.Barrier(2, timeout=10)
    ids: list[int] = []

    def producer(order: int) -> None:
        with psycopg.connect(db_url) as c:
            barrier.wait()
            ids.append(
                outbox.enqueue(
                    c, "race", recipient=setup, template="order_confirmed", data={"order": order}
                )
            )
            c.commit()

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM outbox.deliveries").fetchone()[0] == 4
        nid = c.execute("SELECT id FROM outbox.notifications").fetchone()[0]
    assert ids == [nid, nid]


def test_concurrent_enqueue_when_the_first_rolls_back(db_url, setup):
    """The second producer waits on the first's row; when the first rolls back, the second wins."""
    first = psycopg.connect(db_url)
    outbox.enqueue(first, "race", recipient=setup, template="order_confirmed", data={"order": 1})
    result: list[int] = []
    second_thread = threading.Thread(
        target=lambda: result.append(_enqueue_and_commit(db_url, setup))
    )
    second_thread.start()
    second_thread.join(timeout=0.5)
    assert second_thread.is_alive(), "the second enqueue should wait for the first transaction"
    first.rollback()
    first.close()
    second_thread.join(timeout=10)
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT array_agg(id) FROM outbox.notifications").fetchone()[0] == result


def _enqueue_and_commit(db_url: str, user: str) -> int:
    with psycopg.connect(db_url) as c:
        nid = outbox.enqueue(
            c, "race", recipient=user, template="order_confirmed", data={"order": 2}
        )
        c.commit()
        return nid


def test_push_fans_out_to_active_devices_only(conn, setup):
    outbox.deactivate_device(conn, "fcm-token-0002", "test")
    outbox.enqueue(
        conn,
        "m-push",
        recipient=setup,
        template="order_confirmed",
        channels=["push"],
        data={"order": 3},
    )
    rows = conn.execute("SELECT destination FROM outbox.deliveries ORDER BY id").fetchall()
    assert rows == [("apns-token-0001",)]


def test_push_without_devices_is_recorded_suppressed(conn, setup):
    outbox.deactivate_device(conn, "apns-token-0001")
    outbox.deactivate_device(conn, "fcm-token-0002")
    outbox.enqueue(
        conn,
        "m-push",
        recipient=setup,
        template="order_confirmed",
        channels=["push"],
        data={"order": 3},
    )
    assert conn.execute("SELECT status::text, last_error FROM outbox.deliveries").fetchall() == [
        ("suppressed", "no active device")
    ]


def test_direct_address_infers_channel(conn, setup):
    outbox.enqueue(
        conn, "m-a", address="someone@example.org", template="order_confirmed", data={"order": 1}
    )
    outbox.enqueue(
        conn, "m-b", address="+33612345678", template="order_confirmed", data={"order": 1}
    )
    rows = conn.execute(
        "SELECT channel::text, destination FROM outbox.deliveries ORDER BY id"
    ).fetchall()
    assert rows == [("email", "someone@example.org"), ("sms", "+33612345678")]


def test_opt_out_suppresses_and_critical_bypasses(conn, setup):
    outbox.set_preference(conn, setup, "email", opted_in=False, category="marketing")
    conn.execute("INSERT INTO outbox.categories (name, critical) VALUES ('security', true)")
    outbox.set_preference(conn, setup, "sms", opted_in=False)  # all categories
    outbox.enqueue(
        conn,
        "promo",
        recipient=setup,
        template="order_confirmed",
        category="marketing",
        channels=["email"],
        data={"order": 1},
    )
    outbox.enqueue(
        conn,
        "otp",
        recipient=setup,
        template="order_confirmed",
        category="security",
        channels=["sms"],
        data={"order": 1},
    )
    outbox.enqueue(
        conn,
        "receipt",
        recipient=setup,
        template="order_confirmed",
        category="orders",
        channels=["sms"],
        data={"order": 1},
    )
    rows = conn.execute(
        "SELECT n.message_id, d.status::text, d.last_error FROM outbox.deliveries d "
        "JOIN outbox.notifications n ON n.id = d.notification_id ORDER BY d.id"
    ).fetchall()
    assert rows == [
        ("promo", "suppressed", "opted out of email marketing"),
        ("otp", "pending", None),
        ("receipt", "suppressed", "opted out of sms"),
    ]
    assert (
        conn.execute("SELECT count(*) FROM outbox.events WHERE kind = 'suppressed'").fetchone()[0]
        == 2
    )


def test_already_expired_is_recorded_expired(conn, setup):
    past = datetime.now(UTC) - timedelta(minutes=1)
    outbox.enqueue(
        conn,
        "late",
        recipient=setup,
        template="order_confirmed",
        channels=["email"],
        data={"order": 1},
        expires_at=past,
    )
    assert conn.execute("SELECT status::text FROM outbox.deliveries").fetchone()[0] == "expired"


def test_send_at_sets_next_attempt(conn, setup):
    later = datetime.now(UTC) + timedelta(hours=2)
    outbox.enqueue(
        conn,
        "later",
        recipient=setup,
        template="order_confirmed",
        channels=["email"],
        data={"order": 1},
        send_at=later,
    )
    assert conn.execute("SELECT next_attempt_at FROM outbox.deliveries").fetchone()[0] == later


def test_bulk_enqueue_in_one_call(conn, setup):
    ids = outbox.enqueue_many(
        conn,
        [
            {
                "message_id": f"bulk-{i}",
                "recipient": setup,
                "template": "order_confirmed",
                "channels": ["email"],
                "data": {"order": i},
                "priority": -5,
            }
            for i in range(50)
        ]
        + [{"message_id": "bulk-0", "recipient": setup, "template": "order_confirmed"}],
    )
    assert len(ids) == 51 and ids[0] == ids[-1]
    assert _count(conn, "deliveries") == 50
    assert conn.execute("SELECT DISTINCT priority FROM outbox.deliveries").fetchall() == [(-5,)]


def test_cancel_cancels_pending(conn, setup):
    outbox.enqueue(conn, "m-c", recipient=setup, template="order_confirmed", data={"order": 1})
    assert outbox.cancel(conn, "m-c") == 4
    assert outbox.cancel(conn, "m-c") == 0
    assert conn.execute("SELECT DISTINCT status::text FROM outbox.deliveries").fetchall() == [
        ("cancelled",)
    ]
    with pytest.raises(errors.NotFound, match="no notification with message_id 'nope'"):
        outbox.cancel(conn, "nope")


BAD_ENQUEUES = [
    (dict(channels=["fax"]), errors.UnknownChannel, "channels", "unknown channel 'fax'"),
    (dict(template="nope"), errors.UnknownTemplate, "template", "unknown template 'nope'"),
    (dict(recipient="ghost"), errors.UnknownRecipient, "recipient", "unknown recipient 'ghost'"),
    (
        dict(data=[1, 2]),
        errors.ValidationError,
        "data",
        r"data must be a JSON object \(a dict\), got list",
    ),
    (dict(data={"x": "y" * 70_000}), errors.ValidationError, "data", "the limit is 65536"),
    (dict(data={"when": object()}), errors.ValidationError, "data", "not JSON-serialisable"),
    (
        dict(recipient=None, address="not-an-email@"),
        errors.ValidationError,
        "address",
        "is not a valid email address",
    ),
    (
        dict(recipient=None, address="+0123"),
        errors.ValidationError,
        "address",
        "is not an E.164 phone number",
    ),
    (
        dict(recipient=None, address="someone@example.org", channels=["push"]),
        errors.ValidationError,
        "channels",
        "a direct address takes exactly one channel",
    ),
    (
        dict(address="a@example.org"),
        errors.ValidationError,
        "recipient",
        "give exactly one of recipient or address",
    ),
    (dict(message_id=""), errors.ValidationError, "message_id", "message_id must be 1 to 255"),
    (dict(priority=500), errors.ValidationError, "priority", "between -100 and 100"),
    (dict(category="Bad Category"), errors.ValidationError, "category", "is not a valid name"),
    (dict(channels=[]), errors.ValidationError, "channels", "channels is empty"),
]


@pytest.mark.parametrize(
    ("override", "exc", "field", "message"), BAD_ENQUEUES, ids=[m for *_, m in BAD_ENQUEUES]
)
def test_bad_input_is_named_and_writes_nothing(conn, setup, override, exc, field, message):
    kwargs = dict(recipient=setup, template="order_confirmed", data={"order": 1})
    kwargs.update(override)
    message_id = kwargs.pop("message_id", "bad-1")
    with pytest.raises(exc, match=message) as info:
        outbox.enqueue(conn, message_id, **kwargs)
    assert info.value.field == field
    conn.rollback()
    assert _count(conn, "notifications") == 0
    assert _count(conn, "deliveries") == 0


def test_template_missing_for_requested_channel(conn):
    user = factories.recipient(conn)
    factories.templates(conn, "email_only", channels=("email",))
    with pytest.raises(errors.UnknownTemplate, match="has no active version for channel sms"):
        outbox.enqueue(conn, "m", recipient=user, template="email_only", channels=["sms"])


def test_default_channels_are_what_recipient_can_receive(conn):
    user = factories.recipient(conn, phone="")  # email only
    factories.templates(conn)
    outbox.enqueue(conn, "m", recipient=user, template="order_confirmed", data={"order": 1})
    assert conn.execute("SELECT channel::text FROM outbox.deliveries").fetchall() == [("email",)]


BAD_REGISTRATIONS = [
    (lambda c: outbox.upsert_recipient(c, "u", phone="0612345678"), "phone", "not an E.164"),
    (lambda c: outbox.upsert_recipient(c, "u", email="nope"), "email", "not a valid email"),
    (
        lambda c: outbox.upsert_recipient(c, "u", timezone="Mars/Olympus"),
        "timezone",
        "unknown time zone",
    ),
    (
        lambda c: outbox.register_device(c, "user-7", "tok-12345678", "blackberry"),
        "platform",
        "unknown platform",
    ),
    (
        lambda c: outbox.register_device(c, "ghost", "tok-12345678", "apns"),
        "recipient",
        "unknown recipient",
    ),
    (
        lambda c: outbox.set_preference(c, "user-7", "fax", opted_in=False),
        "channel",
        "unknown channel",
    ),
    (lambda c: outbox.create_template(c, "k", "email", "body"), "subject", "needs a subject"),
]


@pytest.mark.parametrize(
    ("call", "field", "message"), BAD_REGISTRATIONS, ids=[m for *_, m in BAD_REGISTRATIONS]
)
def test_bad_registration_is_named(conn, setup, call, field, message):
    with pytest.raises(errors.ValidationError, match=message) as info:
        call(conn)
    assert info.value.field == field


def test_the_database_refuses_bad_states(conn, setup):
    """Constraints hold even for writes that bypass the functions."""
    bad = [
        "UPDATE outbox.deliveries SET status = 'processing'",  # no lease
        "UPDATE outbox.deliveries SET attempts = -1",
        "UPDATE outbox.deliveries SET status = 'dead'",  # no reason
        "UPDATE outbox.deliveries SET status = 'bogus'",
        "UPDATE outbox.recipients SET phone = '12345'",
        "UPDATE outbox.templates SET active = true",  # second active version
        "UPDATE outbox.templates SET body = 'changed'",  # immutable content
        "UPDATE outbox.events SET kind = 'sent'",  # append-only
    ]
    outbox.enqueue(conn, "m", recipient=setup, template="order_confirmed", data={"order": 1})
    outbox.create_template(conn, "order_confirmed", "sms", "v2 {{ order }}", activate=False)
    conn.commit()
    for statement in bad:
        with pytest.raises(psycopg.Error):
            conn.execute(statement)
        conn.rollback()


def test_template_versions_are_never_deleted_nor_renumbered(conn, setup):
    """deliveries.template_id has no foreign key (migration 0016): it holds because
    no version can be deleted, truncated away or given another id."""
    outbox.create_template(conn, "order_confirmed", "sms", "v2 {{ order }}", activate=False)
    conn.commit()
    unused = conn.execute(
        "SELECT max(id) FROM outbox.templates WHERE key = 'order_confirmed' AND channel = 'sms'"
    ).fetchone()[0]
    refused = [
        ("DELETE FROM outbox.templates WHERE id = %s", "never deleted"),
        ("TRUNCATE outbox.templates CASCADE", "never deleted"),
        ("UPDATE outbox.templates SET id = DEFAULT WHERE id = %s", "immutable"),
    ]
    for statement, message in refused:
        with pytest.raises(psycopg.Error, match=message) as caught:
            conn.execute(statement, (unused,) if "%s" in statement else None)
        assert caught.value.sqlstate == "OB005", statement
        conn.rollback()
    kept = conn.execute("SELECT count(*) FROM outbox.templates WHERE id = %s", (unused,)).fetchone()
    assert kept == (1,)


def test_device_reregistration_moves_and_reactivates(conn, setup):
    other = factories.recipient(conn, "user-8")
    outbox.deactivate_device(conn, "apns-token-0001", "apns: Unregistered")
    outbox.register_device(conn, other, "apns-token-0001", "apns")
    row = conn.execute(
        "SELECT r.external_id, d.active FROM outbox.devices d JOIN outbox.recipients r "
        "ON r.id = d.recipient_id WHERE token = 'apns-token-0001'"
    ).fetchone()
    assert row == ("user-8", True)


def test_template_versions_and_rollback(conn):
    assert outbox.create_template(conn, "welcome", "sms", "Hi v1") == 1
    assert outbox.create_template(conn, "welcome", "sms", "Hi v1") == 1  # unchanged: no new version
    assert outbox.create_template(conn, "welcome", "sms", "Hi v2") == 2
    active = "SELECT version FROM outbox.templates WHERE key = 'welcome' AND active"
    assert conn.execute(active).fetchall() == [(2,)]
    outbox.activate_template(conn, "welcome", "sms", 1, actor="test")
    assert conn.execute(active).fetchall() == [(1,)]
    event = conn.execute(
        "SELECT detail FROM outbox.events WHERE kind = 'template_activated'"
    ).fetchone()[0]
    assert event == {
        "template": "welcome",
        "channel": "sms",
        "locale": "default",
        "version": 1,
        "previous_version": 2,
    }
    with pytest.raises(errors.UnknownTemplate, match="no version 9"):
        outbox.activate_template(conn, "welcome", "sms", 9)
