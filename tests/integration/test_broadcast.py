"""Topics, subscriptions and broadcasts (sql/functions/broadcast.sql), through the
Python API and as the roles that call them, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import outbox
import outbox.aio
from outbox.calls import BroadcastResult
from outbox.errors import IllegalTransition
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker


def _deliveries(conn: Any, broadcast: str) -> list[tuple[str, str, str, str, str | None]]:
    """(message id, recipient, channel, status, last_error) of a broadcast's deliveries."""
    return conn.execute(
        "SELECT n.message_id, r.external_id, d.channel::text, d.status::text, d.last_error"
        " FROM outbox.notifications n"
        " JOIN outbox.broadcasts b ON b.id = n.broadcast_id"
        " JOIN outbox.deliveries d ON d.notification_id = n.id"
        " LEFT JOIN outbox.recipients r ON r.id = n.recipient_id"
        " WHERE b.message_id = %s ORDER BY r.external_id, d.channel",
        [broadcast],
    ).fetchall()


def _rid(conn: Any, external_id: str) -> int:
    return conn.execute(
        "SELECT id FROM outbox.recipients WHERE external_id = %s", [external_id]
    ).fetchone()[0]


@pytest.fixture
def news(conn: psycopg.Connection) -> psycopg.Connection:
    """Topic 'news' with subscribers a (email), b (email + sms, opted out of sms) and
    c (nothing to reach); d exists but is not subscribed; template 'promo' (email, sms)."""
    factories.templates(conn, "promo", ("email", "sms"))
    factories.recipient(conn, "a", phone=None)
    factories.recipient(conn, "b")
    factories.recipient(conn, "c", email=None, phone=None)
    factories.recipient(conn, "d")
    outbox.set_preference(conn, "b", "sms", opted_in=False)
    outbox.create_topic(conn, "news", description="News")
    for who in ("a", "b", "c"):
        assert outbox.subscribe(conn, who, "news") is True
    conn.commit()
    return conn


def test_a_topic_broadcast_reaches_exactly_the_subscribers_and_honours_opt_outs(news):
    result = outbox.broadcast(news, "promo-1", topic="news", template="promo", data={"x": 1})
    assert result == BroadcastResult(
        targets=3, enqueued=2, already=0, unreachable=1, unknown=0, last_recipient=_rid(news, "c")
    )
    rows = _deliveries(news, "promo-1")
    assert rows == [
        (f"promo-1/{_rid(news, 'a')}", "a", "email", "pending", None),
        (f"promo-1/{_rid(news, 'b')}", "b", "email", "pending", None),
        (f"promo-1/{_rid(news, 'b')}", "b", "sms", "suppressed", "opted out of sms"),
    ]
    # Each is an ordinary notification: its events and its cancel work as for enqueue.
    kinds = news.execute(
        "SELECT e.kind, count(*) FROM outbox.events e JOIN outbox.notifications n"
        " ON n.id = e.notification_id WHERE n.broadcast_id IS NOT NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert kinds == [("created", 3), ("suppressed", 1)]
    assert outbox.cancel(news, f"promo-1/{_rid(news, 'a')}") == 1


def test_a_critical_category_bypasses_the_opt_out_as_enqueue_does(news):
    news.execute("INSERT INTO outbox.categories (name, critical) VALUES ('security', true)")
    outbox.broadcast(news, "alert", topic="news", template="promo", category="security")
    statuses = {(r[1], r[2]): r[3] for r in _deliveries(news, "alert")}
    assert statuses[("b", "sms")] == "pending"


def test_a_rerun_enqueues_only_new_subscribers_and_never_twice(news):
    outbox.broadcast(news, "promo-2", topic="news", template="promo")
    news.commit()
    outbox.subscribe(news, "d", "news")
    # The rerun's content is ignored, as for a repeated enqueue: the first call's stays.
    again = outbox.broadcast(news, "promo-2", topic="news", template="promo", data={"x": 2})
    assert (again.targets, again.enqueued, again.already, again.unreachable) == (4, 1, 2, 1)
    rows = _deliveries(news, "promo-2")
    assert [r[1] for r in rows if r[2] == "email"] == ["a", "b", "d"]
    data = news.execute(
        "SELECT DISTINCT n.data FROM outbox.notifications n JOIN outbox.broadcasts b"
        " ON b.id = n.broadcast_id WHERE b.message_id = 'promo-2'"
    ).fetchall()
    assert data == [({},)]
    third = outbox.broadcast(news, "promo-2", topic="news", template="promo")
    assert (third.enqueued, third.already) == (0, 3)


def test_chunks_cover_the_topic_once_whatever_order_they_are_rerun_in(news):
    outbox.subscribe(news, "d", "news")
    seen, after = [], None
    while True:
        chunk = outbox.broadcast(
            news, "promo-3", topic="news", template="promo", after_recipient=after, max_recipients=2
        )
        seen.append(chunk.targets)
        if chunk.last_recipient is None:
            break
        after = chunk.last_recipient
    assert seen == [2, 2, 0]
    # A crash after the first chunk, and everything run again from the start.
    whole = outbox.broadcast(news, "promo-3", topic="news", template="promo")
    assert (whole.enqueued, whole.already) == (0, 3)
    assert len({r[0] for r in _deliveries(news, "promo-3")}) == 3


def test_unsubscribe_removes_the_recipient_from_later_broadcasts(news):
    assert outbox.unsubscribe(news, "a", "news") is True
    assert outbox.unsubscribe(news, "a", "news") is False
    outbox.broadcast(news, "promo-4", topic="news", template="promo")
    assert {r[1] for r in _deliveries(news, "promo-4")} == {"b"}


def test_a_list_broadcast_counts_unknown_ids(news):
    result = outbox.broadcast(
        news, "promo-5", recipients=["a", "d", "ghost", "a"], template="promo", channels="sms"
    )
    assert (result.targets, result.enqueued, result.unknown) == (3, 2, 1)
    # Channels given: a has no phone, recorded suppressed as enqueue records it.
    assert [(r[1], r[3], r[4]) for r in _deliveries(news, "promo-5")] == [
        ("a", "suppressed", "no phone number"),
        ("d", "pending", None),
    ]


def test_a_segment_query_runs_and_chunks(news):
    segment = "SELECT external_id FROM outbox.recipients WHERE external_id <> 'c';"
    result = outbox.broadcast(news, "seg-1", segment=segment, template="promo")
    assert (result.targets, result.enqueued, result.last_recipient) == (3, 3, "d")
    chunk = outbox.broadcast(
        news,
        "seg-2",
        segment="VALUES ('a'), ('b'), (NULL), ('zz')",
        template="promo",
        after_recipient="a",
        max_recipients=2,
    )
    assert (chunk.targets, chunk.enqueued, chunk.unknown, chunk.last_recipient) == (2, 1, 1, "zz")


@pytest.mark.parametrize(
    ("segment", "says"),
    [
        (
            "SELECT id FROM outbox.recipients",
            "segment returns bigint; it must return recipient ids",
        ),
        ("SELECT id::text, email FROM outbox.recipients", "returns more than one column"),
        ("SELEC 1", "segment fails: syntax error"),
        ("SELECT x FROM app_users", 'segment fails: relation "app_users" does not exist'),
        ("   ;", "segment is empty"),
        (
            "WITH gone AS (DELETE FROM outbox.topics RETURNING name) SELECT name FROM gone",
            "data-modifying statement",
        ),
    ],
)
def test_a_bad_segment_is_refused_naming_it_and_changes_nothing(news, segment, says):
    with pytest.raises(outbox.ValidationError) as err:
        outbox.broadcast(news, "seg-bad", segment=segment, template="promo")
    assert err.value.field == "segment" and says in str(err.value)
    news.rollback()
    assert news.execute("SELECT count(*) FROM outbox.broadcasts").fetchone()[0] == 0
    assert news.execute("SELECT count(*) FROM outbox.topics").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("kwargs", "field", "exc"),
    [
        ({"topic": "nope"}, "topic", outbox.ValidationError),
        ({"topic": "news", "template": "missing"}, "template", outbox.UnknownTemplate),
        ({"topic": "news", "channels": ["fax"]}, "channels", outbox.UnknownChannel),
        ({"topic": "news", "channels": ["push"]}, "template", outbox.UnknownTemplate),
        ({"topic": "news", "message_id": "x" * 201}, "message_id", outbox.ValidationError),
        ({"topic": "news", "priority": 101}, "priority", outbox.ValidationError),
        ({"topic": "news", "category": "Bad Name"}, "category", outbox.ValidationError),
        ({"topic": "news", "recipients": ["a"]}, "topic", outbox.ValidationError),
        ({"recipients": "a"}, "recipients", outbox.ValidationError),
        ({"topic": "news", "after_recipient": 3}, "after_recipient", outbox.ValidationError),
        ({"topic": "news", "max_recipients": 0}, "max_recipients", outbox.ValidationError),
    ],
)
def test_bad_broadcast_arguments_name_the_field(news, kwargs, field, exc):
    kwargs = {"message_id": "bad", "template": "promo"} | kwargs
    with pytest.raises(exc) as err:
        outbox.broadcast(news, kwargs.pop("message_id"), **kwargs)
    assert err.value.field == field, str(err.value)
    news.rollback()
    assert news.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0] == 0


def test_subscribe_errors_name_the_field(news):
    with pytest.raises(outbox.UnknownRecipient) as err:
        outbox.subscribe(news, "ghost", "news")
    assert err.value.field == "recipient"
    news.rollback()
    with pytest.raises(outbox.ValidationError) as err:
        outbox.subscribe(news, "a", "nope")
    assert err.value.field == "topic" and "create it with outbox.create_topic" in str(err.value)
    news.rollback()
    with pytest.raises(outbox.ValidationError) as err:
        outbox.create_topic(news, "Not A Name")
    assert err.value.field == "topic"


def test_cancel_broadcast_cancels_every_notification_and_refuses_reruns(news):
    outbox.broadcast(news, "promo-6", topic="news", template="promo")
    cancelled = outbox.cancel_broadcast(news, "promo-6", reason="typo in the subject")
    assert (cancelled.cancelled, cancelled.in_flight) == (2, 0)
    assert {r[3] for r in _deliveries(news, "promo-6")} == {"cancelled", "suppressed"}
    with pytest.raises(IllegalTransition, match="was cancelled"):
        outbox.broadcast(news, "promo-6", topic="news", template="promo")
    news.rollback()
    with pytest.raises(outbox.NotFound):
        outbox.cancel_broadcast(news, "never-sent")


def test_erasing_a_subscriber_removes_the_subscription(news):
    outbox.erase_recipient(news, "a")
    count = news.execute("SELECT count(*) FROM outbox.subscriptions").fetchone()[0]
    assert count == 2


def test_the_producer_role_subscribes_and_broadcasts_through_the_functions_only(news, login):
    url = login("outbox_producer")
    # The application's own table, which the producer's login may read.
    news.execute("CREATE TABLE public.app_users (id integer, plan text)")
    news.execute("INSERT INTO public.app_users VALUES (1, 'pro'), (2, 'free')")
    news.execute("UPDATE outbox.recipients SET external_id = '1' WHERE external_id = 'd'")
    news.execute("GRANT SELECT ON public.app_users TO outbox_producer")
    news.commit()
    with psycopg.connect(url) as producer:
        outbox.create_topic(producer, "ops")
        assert outbox.subscribe(producer, "a", "ops") is True
        assert outbox.broadcast(producer, "ops-1", topic="ops", template="promo").enqueued == 1
        segment = "SELECT id::text FROM public.app_users WHERE plan = 'pro'"
        assert outbox.broadcast(producer, "pro-1", segment=segment, template="promo").enqueued == 1
        assert outbox.cancel_broadcast(producer, "pro-1") == 2  # its email and its sms
        producer.commit()
        # The segment runs with the producer's own rights: the outbox tables are closed to it.
        with pytest.raises(outbox.ValidationError) as err:
            outbox.broadcast(
                producer,
                "steal",
                segment="SELECT email FROM outbox.recipients",
                template="promo",
            )
        assert err.value.field == "segment"
        assert "permission denied for table recipients" in str(err.value)
        producer.rollback()
        for sql in (
            "INSERT INTO outbox.subscriptions VALUES (1, 1)",
            "DELETE FROM outbox.subscriptions",
            "INSERT INTO outbox.topics (name) VALUES ('x')",
            "UPDATE outbox.broadcasts SET cancelled_at = NULL, cancel_reason = NULL",
            "SELECT * FROM outbox.broadcast_insert('x', NULL, '{1}')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                producer.execute(sql)
            producer.rollback()


def test_the_broadcast_functions_are_definer_pinned_but_the_segment_runs_as_its_caller(conn):
    rows = dict(
        conn.execute(
            "SELECT p.proname, p.prosecdef FROM pg_proc p"
            " WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname IN"
            " ('create_topic', 'subscribe', 'unsubscribe', 'broadcast', 'broadcast_list',"
            "  'broadcast_segment', 'cancel_broadcast', 'cancel_detailed')"
        ).fetchall()
    )
    assert rows == {
        "create_topic": True,
        "subscribe": True,
        "unsubscribe": True,
        "broadcast": True,
        "broadcast_list": True,
        "broadcast_segment": False,
        "cancel_broadcast": True,
        "cancel_detailed": True,
    }
    api_may = dict(
        conn.execute(
            "SELECT p.proname, has_function_privilege('outbox_api', p.oid, 'EXECUTE')"
            " FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace"
            " AND p.proname IN ('broadcast', 'broadcast_segment', 'subscribe')"
        ).fetchall()
    )
    assert api_may == {"broadcast": True, "broadcast_segment": False, "subscribe": True}
    assert not conn.execute(
        "SELECT has_function_privilege('public', 'outbox.broadcast_segment(text, text, text, jsonb,"
        " text[], text, integer, timestamptz, timestamptz, text, integer)', 'EXECUTE')"
    ).fetchone()[0]


def test_a_worker_delivers_a_broadcast_to_the_subscribers_only(news, db_url):
    outbox.subscribe(news, "d", "news")
    outbox.unsubscribe(news, "a", "news")
    outbox.broadcast(news, "deliver-1", topic="news", template="promo", data={"order": 1})
    news.commit()
    provider = ScriptedProvider()

    async def drain() -> None:
        worker = make_worker(db_url, provider)
        try:
            while await worker.run_once():
                pass
        finally:
            await worker.close()

    asyncio.run(drain())
    # b: email (its sms opted out: recorded suppressed); d: email and sms;
    # a unsubscribed; c unreachable.
    sent = sorted(m.destination for m in provider.calls)
    emails = {
        r: news.execute(
            "SELECT email FROM outbox.recipients WHERE external_id = %s", [r]
        ).fetchone()[0]
        for r in ("b", "d")
    }
    d_phone = news.execute(
        "SELECT phone FROM outbox.recipients WHERE external_id = 'd'"
    ).fetchone()[0]
    assert sent == sorted([emails["b"], emails["d"], d_phone])
    news.rollback()
    assert sorted(r[3] for r in _deliveries(news, "deliver-1")) == [
        "sent",
        "sent",
        "sent",
        "suppressed",
    ]


def test_the_asyncio_api_broadcasts_too(news, db_url):
    async def go() -> tuple[bool, Any]:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            joined = await outbox.aio.subscribe(aconn, "d", "news")
            result = await outbox.aio.broadcast(aconn, "aio-1", topic="news", template="promo")
            await aconn.commit()
            return joined, result

    joined, result = asyncio.run(go())
    assert joined is True and (result.targets, result.enqueued) == (4, 3)
