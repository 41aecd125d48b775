"""Operations against a real PostgreSQL: status, inspect, retention (prune), roles."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

import outbox
from outbox import migrate, ops
from outbox.cli import _register, app
from outbox.errors import NotFound
from outbox.providers.base import Outcome
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker

runner = CliRunner()


def _cli(db_url: str, *args: str):
    if not any(c.name == "status" for c in app.registered_commands):
        _register()
    return runner.invoke(app, list(args), env={"OUTBOX_DATABASE_URL": db_url, "COLUMNS": "200"})


@pytest.fixture
def world(conn):
    """user-7 with email, phone and an APNs device; templates for every channel."""
    return factories.seven(conn, fcm=False)


_enqueue = factories.enqueue_committed


def _drain(worker, rounds: int = 20) -> None:
    async def go():
        try:
            for _ in range(rounds):
                if await worker.run_once() == 0:
                    return
        finally:
            await worker.close()

    asyncio.run(go())


def _prune(db_url: str, **kw) -> ops.PruneResult:
    async def go():
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            return await ops.prune(aconn, **kw)

    return asyncio.run(go())


def _age(conn, message_id: str, days: int) -> None:
    """Make a notification, its deliveries and its events look ``days`` old (superuser, tests)."""
    conn.execute(
        """
        WITH n AS (UPDATE outbox.notifications
                   SET created_at = created_at - make_interval(days => %(d)s)
                   WHERE message_id = %(m)s RETURNING id)
        , d AS (UPDATE outbox.deliveries d
                SET created_at = d.created_at - make_interval(days => %(d)s),
                       finished_at = d.finished_at - make_interval(days => %(d)s)
                FROM n WHERE d.notification_id = n.id RETURNING d.id)
        SELECT count(*) FROM d""",
        {"d": days, "m": message_id},
    )
    conn.execute("ALTER TABLE outbox.events DISABLE TRIGGER events_append_only")
    conn.execute(
        """UPDATE outbox.events e SET created_at = e.created_at - make_interval(days => %(d)s)
                    FROM outbox.notifications n
                    WHERE n.id = e.notification_id AND n.message_id = %(m)s""",
        {"d": days, "m": message_id},
    )
    conn.execute("ALTER TABLE outbox.events ENABLE TRIGGER events_append_only")
    conn.commit()


def _statuses(conn, message_id: str) -> dict[str, str]:
    return dict(
        conn.execute(
            """
        SELECT d.channel::text, d.status::text FROM outbox.deliveries d
        JOIN outbox.notifications n ON n.id = d.notification_id WHERE n.message_id = %s""",
            [message_id],
        ).fetchall()
    )


def _events(conn, message_id: str) -> int:
    return conn.execute(
        """SELECT count(*) FROM outbox.events e JOIN outbox.notifications n
                           ON n.id = e.notification_id WHERE n.message_id = %s""",
        [message_id],
    ).fetchone()[0]


# -- status ------------------------------------------------------------------------------------


def test_status_reports_depth_oldest_and_dead(world, db_url):
    # Breakers are reported only when their (optional) table is installed: not here.
    world.execute("DROP TABLE IF EXISTS outbox.provider_breakers CASCADE")
    world.commit()
    for i in range(3):
        _enqueue(world, f"now-{i}")
    _enqueue(world, "later", send_at=datetime.now(UTC) + timedelta(days=30))
    world.execute("""UPDATE outbox.deliveries SET status = 'dead', last_error = 'test: bounced',
                     finished_at = now() WHERE id IN (SELECT id FROM outbox.deliveries
                     WHERE channel = 'sms' ORDER BY id LIMIT 1)""")
    world.commit()

    report = ops.status(world)
    queue = {(r["channel"], r["status"]): r for r in report["queue"]}
    assert (queue[("email", "pending")]["due"], queue[("email", "pending")]["scheduled"]) == (3, 1)
    assert queue[("sms", "pending")]["total"] == 3  # one of four went dead
    assert {r["channel"] for r in report["oldest"]} == {"email", "sms", "push"}
    assert all(r["age_seconds"] >= 0 for r in report["oldest"])
    assert [(r["channel"], r["dead"]) for r in report["dead"]] == [("sms", 1)]
    assert report["breakers"] is None  # no breaker table in this schema

    out = _cli(db_url, "status")
    assert out.exit_code == 0, out.output
    assert "queue: unfinished deliveries" in out.output
    assert "oldest due pending delivery" in out.output
    assert "dead letters" in out.output and "breakers" not in out.output
    email_line = next(
        line for line in out.output.splitlines() if "email" in line and "pending" in line
    )
    # Not a terminal: plain columns, no box characters to strip.
    assert "│" not in out.output and "━" not in out.output
    assert email_line.split() == ["email", "pending", "3", "1", "4"]


def test_status_shows_breakers_when_the_table_exists(world, db_url):
    # The circuit breaker's table is optional: status shows whatever columns it has
    # (here a stand-in of our own, whatever the installed schema has).
    world.execute("DROP TABLE IF EXISTS outbox.provider_breakers CASCADE")
    world.execute(
        "CREATE TABLE outbox.provider_breakers (provider text PRIMARY KEY, state text, "
        "opened_at timestamptz)"
    )
    world.execute(
        "INSERT INTO outbox.provider_breakers VALUES ('twilio', 'open', now()), "
        "('sendgrid', 'closed', NULL)"
    )
    world.commit()
    report = ops.status(world)
    assert [(b["provider"], b["state"]) for b in report["breakers"]] == [
        ("sendgrid", "closed"),
        ("twilio", "open"),
    ]
    out = _cli(db_url, "status")
    assert out.exit_code == 0, out.output
    assert (
        "provider circuit breakers" in out.output
        and "twilio" in out.output
        and "open" in out.output
    )


def test_status_json_is_machine_readable(world, db_url):
    import json

    _enqueue(world, "m-1")
    out = _cli(db_url, "status", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {r["channel"] for r in doc["queue"]} == {"email", "sms", "push"}


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_shows_notification_deliveries_and_timeline(world, db_url):
    _enqueue(world, "order-42", data={"order": 42, "code": "913377"})
    provider = ScriptedProvider(script={"+14155550107": [Outcome.retry("twilio: 503")]})
    _drain(make_worker(db_url, provider))

    found = ops.inspect(world, "order-42")
    assert found["notification"]["message_id"] == "order-42"
    assert found["notification"]["recipient"] == "user-7"
    assert {d["channel"]: d["status"] for d in found["deliveries"]} == {
        "email": "sent",
        "push": "sent",
        "sms": "pending",
    }
    sms = next(d for d in found["deliveries"] if d["channel"] == "sms")
    kinds = [e["kind"] for e in found["timeline"] if e["delivery_id"] == sms["id"]]
    assert kinds == ["created", "processing", "retry"]
    assert [e["at"] for e in found["timeline"]] == sorted(e["at"] for e in found["timeline"])

    out = _cli(db_url, "inspect", "order-42")
    assert out.exit_code == 0, out.output
    for text in (
        "notification order-42",
        "delivery 1 (email, sent",
        "timeline",
        "seven@example.com",
        "retry",
        "503",
    ):
        assert text in out.output, text
    # Template data may hold codes: values are shown only on request.
    assert "913377" not in out.output
    assert "913377" in _cli(db_url, "inspect", "order-42", "--data").output


def test_inspect_unknown_message_id_says_so(world, db_url):
    with pytest.raises(NotFound, match="no-such-id"):
        ops.inspect(world, "no-such-id")
    out = _cli(db_url, "inspect", "no-such-id")
    assert out.exit_code == 1
    assert "no notification with message id 'no-such-id'" in out.output


# -- retention ----------------------------------------------------------------------------------


@pytest.fixture
def history(world, db_url):
    """Old finished, old mixed, recent finished, and old unfinished notifications.

    Created oldest first, as in production: ids grow with time, and retention
    stops at the first id range created after the cutoff.
    """
    # Events that belong to no notification (template activations, a device
    # deactivation): 40 days old, so before everything else.
    world.execute("""INSERT INTO outbox.events (kind, worker, detail, created_at)
                     VALUES ('device_deactivated', 'test', '{"device_id": 1}',
                             now() - interval '40 days')""")
    world.execute("ALTER TABLE outbox.events DISABLE TRIGGER events_append_only")
    world.execute(
        "UPDATE outbox.events SET created_at = now() - interval '40 days' "
        "WHERE notification_id IS NULL"
    )
    world.execute("ALTER TABLE outbox.events ENABLE TRIGGER events_append_only")
    world.commit()
    _enqueue(world, "old-done")  # all sent, 40 days ago: goes
    _enqueue(world, "old-mixed")  # sms sent long ago, the rest still pending: stays
    _enqueue(
        world, "old-pending", send_at=datetime.now(UTC) + timedelta(days=30)
    )  # never sent: stays
    _enqueue(world, "recent-done")  # sent today: stays
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider)
    # Send everything due, except old-mixed's email and push (kept pending by a scheduled retry).
    _drain(worker)
    world.execute("""UPDATE outbox.deliveries d
                     SET status = 'pending', next_attempt_at = now() + interval '1 day',
                     finished_at = NULL FROM outbox.notifications n
                     WHERE n.id = d.notification_id AND n.message_id = 'old-mixed'
                       AND d.channel <> 'sms'""")
    world.commit()
    for message_id in ("old-done", "old-mixed", "old-pending"):
        _age(world, message_id, 40)
    # A recent event that belongs to no notification: it stays.
    world.execute("""INSERT INTO outbox.events (kind, worker, detail)
                     VALUES ('device_deactivated', 'test', '{"device_id": 2}')""")
    world.commit()
    return world


def test_prune_removes_old_finished_history_only(history, db_url):
    before = {m: _events(history, m) for m in ("old-mixed", "old-pending", "recent-done")}
    result = _prune(db_url, older_than=timedelta(days=30), batch_size=2)

    assert result.deliveries == 3 + 1  # old-done's three, old-mixed's sent sms
    assert result.notifications == 1
    assert result.batches > 3  # batch size 2: many small transactions
    assert (
        history.execute(
            "SELECT count(*) FROM outbox.notifications WHERE message_id = 'old-done'"
        ).fetchone()[0]
        == 0
    )
    assert _events(history, "old-done") == 0
    # A notification with unfinished deliveries keeps them and their events; only the old
    # finished one goes.
    assert _statuses(history, "old-mixed") == {"email": "pending", "push": "pending"}
    assert (
        _events(history, "old-mixed") == before["old-mixed"] - 3
    )  # sms: created, processing, sent
    assert _statuses(history, "old-pending") == {
        "email": "pending",
        "sms": "pending",
        "push": "pending",
    }
    assert _events(history, "old-pending") == before["old-pending"]
    assert set(_statuses(history, "recent-done").values()) == {"sent"}
    assert _events(history, "recent-done") == before["recent-done"]
    standalone = history.execute(
        "SELECT detail->>'device_id' FROM outbox.events WHERE notification_id IS NULL"
    ).fetchall()
    assert standalone == [("2",)]

    # A second run finds nothing more.
    again = _prune(db_url, older_than=timedelta(days=30))
    assert (again.deliveries, again.notifications, again.events) == (0, 0, 0)


def test_prune_removes_notifications_left_without_deliveries(history, db_url):
    # `outbox dlq purge` deletes dead deliveries but leaves their notification behind.
    history.execute("""DELETE FROM outbox.deliveries d USING outbox.notifications n
                       WHERE n.id = d.notification_id AND n.message_id = 'old-done'""")
    history.commit()
    result = _prune(db_url, older_than=timedelta(days=30), batch_size=3)
    assert result.notifications == 1
    assert (
        history.execute(
            "SELECT count(*) FROM outbox.notifications WHERE message_id = 'old-done'"
        ).fetchone()[0]
        == 0
    )
    assert _events(history, "old-done") == 0


def test_prune_skips_locked_rows_and_never_waits(history, db_url):
    # Someone (a receipt being recorded) holds an old finished delivery locked.
    locker = psycopg.connect(db_url)
    try:
        locked_id = locker.execute("""SELECT d.id FROM outbox.deliveries d
                                      JOIN outbox.notifications n
                                      ON n.id = d.notification_id WHERE n.message_id = 'old-done'
                                      ORDER BY d.id LIMIT 1 FOR UPDATE""").fetchone()[0]
        done = threading.Event()
        box: list[ops.PruneResult] = []

        def run() -> None:
            box.append(_prune(db_url, older_than=timedelta(days=30), batch_size=2))
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert done.wait(20), "prune waited on a locked row"
        assert box[0].deliveries == 3  # everything but the locked row
        assert (
            history.execute(
                "SELECT count(*) FROM outbox.deliveries WHERE id = %s", [locked_id]
            ).fetchone()[0]
            == 1
        )
    finally:
        locker.close()
    # Once the lock is gone, the next run takes the row and its notification.
    result = _prune(db_url, older_than=timedelta(days=30))
    assert (result.deliveries, result.notifications) == (1, 1)


def test_prune_while_workers_claim(history, db_url):
    """Claims go on while a prune runs: prune locks only finished rows."""
    for i in range(20):
        _enqueue(history, f"new-{i}")

    async def both():
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            worker = make_worker(db_url, ScriptedProvider())
            try:
                pruned, claimed = await asyncio.gather(
                    ops.prune(
                        aconn, older_than=timedelta(days=30), batch_size=1, pause_seconds=0.01
                    ),
                    worker.run_once(limit=100),
                )
            finally:
                await worker.close()
            return pruned, claimed

    pruned, claimed = asyncio.run(both())
    assert claimed == 60  # every new one (the old pending ones are not due)
    assert pruned.deliveries == 4


def test_only_one_prune_at_a_time(history, db_url):
    async def go():
        async with (
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as first,
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as second,
        ):
            assert await ops.try_lock(first)
            pruner = ops.Pruner(older_than=timedelta(days=30), batch_size=10, interval_seconds=60)
            skipped = await pruner.run_once(second)
            await ops.unlock(first)
            ran = await pruner.run_once(second)
            return skipped, ran, pruner.last

    skipped, ran, last = asyncio.run(go())
    assert skipped is None
    assert ran is not None and ran.deliveries == 4 and last is ran
    # And the CLI says so when a worker holds the lock.
    holder = psycopg.connect(db_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(hashtextextended('outbox.prune', 0))")
        out = _cli(db_url, "prune", "--older-than", "30d")
        assert out.exit_code == 2 and "another prune is running" in out.output
    finally:
        holder.close()


def test_prune_cli(history, db_url):
    out = _cli(db_url, "prune", "--older-than", "30d", "--batch-size", "2")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("pruned 4 deliveries, 1 notifications and ")
    bad = _cli(db_url, "prune", "--older-than", "thirty days")
    assert bad.exit_code != 0 and "not a duration" in bad.output


def test_workers_prune_periodically_one_at_a_time(history, db_url):
    """Two workers with a pruner: history goes, and the lock made them take turns."""
    pruners = [
        ops.Pruner(older_than=timedelta(days=30), batch_size=2, interval_seconds=0.2)
        for _ in range(2)
    ]

    async def run_two():
        stop = asyncio.Event()
        workers = [make_worker(db_url, ScriptedProvider(), worker_id=f"w{i}") for i in range(2)]
        for worker, pruner in zip(workers, pruners, strict=True):
            worker.pruner = pruner
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        for _ in range(100):
            await asyncio.sleep(0.1)
            if all(p.last is not None for p in pruners) or (
                any(p.last is not None for p in pruners) and _count_old(db_url) == 0
            ):
                break
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(run_two())
    assert _count_old(db_url) == 0
    assert (
        history.execute(
            "SELECT count(*) FROM outbox.notifications WHERE message_id = 'old-done'"
        ).fetchone()[0]
        == 0
    )
    assert _statuses(history, "old-pending") == {
        "email": "pending",
        "sms": "pending",
        "push": "pending",
    }
    assert sum(p.last.deliveries for p in pruners if p.last) == 4


def _count_old(db_url: str) -> int:
    with psycopg.connect(db_url) as c:
        return c.execute("""SELECT count(*) FROM outbox.deliveries
                            WHERE finished_at < now() - interval '30 days'
                            AND status NOT IN ('pending', 'processing')""").fetchone()[0]


def test_pruner_validates_its_settings():
    with pytest.raises(ValueError, match="older_than"):
        ops.Pruner(older_than=timedelta(0))
    with pytest.raises(ValueError, match="batch_size"):
        ops.Pruner(older_than=timedelta(days=1), batch_size=0)
    assert ops.parse_age("30d") == timedelta(days=30)
    assert ops.parse_age("12h") == timedelta(hours=12)
    with pytest.raises(ValueError, match="'30 days'"):
        ops.parse_age("30 days")


# -- roles -------------------------------------------------------------------------------------


def test_producer_can_enqueue_and_register_but_not_touch_tables(world, db_url, login):
    with psycopg.connect(login("outbox_producer")) as app_conn:
        outbox.upsert_recipient(app_conn, "user-9", email="nine@example.com", phone="+14155550109")
        outbox.register_device(app_conn, "user-9", "fcm-token-0009", "fcm")
        outbox.set_preference(app_conn, "user-9", "sms", opted_in=False)
        nid = outbox.enqueue(
            app_conn,
            "from-producer",
            recipient="user-9",
            template="order_confirmed",
            data={"order": 9},
        )
        assert (
            outbox.enqueue(
                app_conn,
                "from-producer",
                recipient="user-9",
                template="order_confirmed",
                data={"order": 9},
            )
            == nid
        )  # idempotent, as for anyone
        outbox.enqueue_many(
            app_conn,
            [
                {
                    "message_id": "many-1",
                    "recipient": "user-9",
                    "template": "order_confirmed",
                    "data": {"order": 1},
                }
            ],
        )
        assert outbox.cancel(app_conn, "many-1") >= 1
        outbox.deactivate_device(app_conn, "fcm-token-0009")
        app_conn.commit()
        for statement in (
            "UPDATE outbox.deliveries SET status = 'sent'",
            "SELECT * FROM outbox.deliveries",
            "INSERT INTO outbox.notifications (message_id, template_key, channels) "
            "VALUES ('forged', 'x', '{email}')",
            "DELETE FROM outbox.events",
            "SELECT * FROM outbox.queue_depth",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app_conn.execute(statement)
            app_conn.rollback()
        # Template management is the owner's (a deploy step), not a producer's.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            outbox.create_template(app_conn, "sneaky", "email", "hi", subject="hi")
        app_conn.rollback()
    statuses = dict(
        world.execute("""SELECT d.channel::text, d.status::text FROM outbox.deliveries d
                                     JOIN outbox.notifications n ON n.id = d.notification_id
                                     WHERE n.message_id = 'from-producer'""").fetchall()
    )
    assert statuses == {"email": "pending", "sms": "suppressed", "push": "pending"}


def test_reader_reads_views_and_tables_but_cannot_write(world, db_url, login):
    _enqueue(world, "for-reader")
    with psycopg.connect(login("outbox_reader")) as ro:
        assert ro.execute("SELECT sum(total) FROM outbox.queue_depth").fetchone()[0] == 3
        ro.execute("SELECT * FROM outbox.dead_letters").fetchall()
        assert (
            len(
                ro.execute(
                    "SELECT * FROM outbox.message_timeline WHERE message_id = 'for-reader'"
                ).fetchall()
            )
            == 3
        )
        assert ops.status(ro)["queue"]
        assert ops.inspect(ro, "for-reader")["deliveries"]
        for statement in (
            "UPDATE outbox.deliveries SET status = 'dead'",
            "DELETE FROM outbox.events",
            "INSERT INTO outbox.suppressions (channel, destination, reason) "
            "VALUES ('email', 'x@y', 'z')",
            "SELECT outbox.enqueue(message_id => 'r', recipient => 'user-7', "
            "template => 'order_confirmed')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ro.execute(statement)
            ro.rollback()


def test_worker_role_runs_a_worker_and_prunes(history, db_url, login):
    url = login("outbox_worker")
    _enqueue(history, "for-worker")
    provider = ScriptedProvider(
        script={"+14155550107": [Outcome.dead_destination("twilio: 21610 STOP")]}
    )
    _drain(make_worker(url, provider))
    assert _statuses(history, "for-worker") == {"email": "sent", "sms": "dead", "push": "sent"}
    assert history.execute("SELECT count(*) FROM outbox.suppressions").fetchone()[0] == 1
    assert _prune(url, older_than=timedelta(days=30)).deliveries == 4
    with psycopg.connect(url) as w:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute("DROP TABLE outbox.events")
        w.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute("UPDATE outbox.templates SET active = false")


def test_producer_functions_are_definer_with_a_pinned_search_path(conn):
    """Pinned by sql/roles.sql.

    A later migration that re-creates these functions (CREATE OR REPLACE) resets
    this: it must run sql/roles.sql again.
    """
    rows = conn.execute("""
        SELECT p.proname, p.prosecdef, p.proconfig,
               has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
               has_function_privilege('outbox_producer', p.oid, 'EXECUTE') AS producer_execute
        FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace
          AND p.proname IN ('enqueue', 'enqueue_many', 'upsert_recipient', 'register_device',
                            'deactivate_device', 'set_preference', 'cancel',
                            'cancel_detailed')""").fetchall()
    assert len(rows) == 8
    for name, definer, config, public_execute, producer_execute in rows:
        assert definer, name
        assert config == ["search_path=pg_catalog, pg_temp"], name
        assert not public_execute and producer_execute, name


def test_roles_migration_downgrades_by_revoking_and_upgrades_again(empty_db_url):
    migrate.upgrade(empty_db_url)
    migrate.downgrade(empty_db_url, "0002")
    with psycopg.connect(empty_db_url) as c:
        assert (
            c.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'outbox\\_%%er' "
                "AND rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader')"
            ).fetchone()[0]
            == 3
        )
        assert not c.execute(
            "SELECT has_table_privilege('outbox_reader', 'outbox.deliveries', 'SELECT')"
        ).fetchone()[0]
        assert not c.execute(
            "SELECT has_schema_privilege('outbox_producer', 'outbox', 'USAGE')"
        ).fetchone()[0]
        assert c.execute(
            "SELECT bool_and(NOT prosecdef) FROM pg_proc "
            "WHERE pronamespace = 'outbox'::regnamespace"
        ).fetchone()[0]
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as c:
        assert c.execute(
            "SELECT has_table_privilege('outbox_reader', 'outbox.deliveries', 'SELECT')"
        ).fetchone()[0]
