"""Least privilege: what each outbox role may do works, and the rest is refused.

Roles (sql/roles.sql, docs/operations.md "Roles"): ``outbox_worker`` (workers,
``outbox prune``, ``outbox dlq``), ``outbox_webhooks`` (the internet-facing
receipt receiver), ``outbox_producer`` and ``outbox_reader``. Each test logs in
as a fresh member of a role (the ``login`` fixture) and does, for real, what that
role's service does; then every write of the L1 finding
(../shared/findings/reliability-2026-12.md) is tried as that role and must fail
with insufficient_privilege, changing nothing. Retention goes through
SECURITY DEFINER functions (sql/retention.sql): no outbox role may delete
history directly, and the events table refuses a DELETE that does not come from
them, whoever sends it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from outbox import dlq, ops
from outbox.cli import _register, app
from outbox.providers.base import Outcome
from outbox.settings import Settings
from outbox.webhooks import store
from tests import factories
from tests.integration import test_webhooks as wh
from tests.integration.test_webhooks import (
    ANN_EMAIL,
    ANN_PHONE,
    base_config,
    delivery,
    mailchimp_event,
    sendgrid_event,
    sent,
    suppressions,
    twilio_params,
    vonage_dlr,
)
from tests.integration.worker_helpers import ScriptedProvider, make_worker

# The receiver as test_webhooks runs it: a login in outbox_webhooks (its hooks_url).
hooks_url, serve, hooks = wh.hooks_url, wh.serve, wh.hooks

# What the L1 finding did as outbox_worker, and what a receipt never needs: each must
# be refused (42501) for both the worker's and the webhook receiver's role.
L1 = {
    "rewrite a destination": "UPDATE outbox.deliveries SET destination = '+19999999999'",
    "delete events": "DELETE FROM outbox.events",
    "delete notifications": "DELETE FROM outbox.notifications",
    "delete deliveries": "DELETE FROM outbox.deliveries",
    "forge an event": "INSERT INTO outbox.events (kind, detail) "
    "VALUES ('delivered', '{\"forged\": true}')",
    "move a device to another recipient": "UPDATE outbox.devices SET recipient_id = 1",
    "truncate events": "TRUNCATE outbox.events",
    "re-point a delivery": "UPDATE outbox.deliveries SET notification_id = 1, channel = 'email'",
    "change attempts allowed": "UPDATE outbox.deliveries SET max_attempts = 100",
    "forge a creation": "INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt)"
    " VALUES (1, 1, 'created', 0)",
    "edit a notification": "UPDATE outbox.notifications SET data = '{}'",
    "steal a push token": "UPDATE outbox.devices SET token = 'attacker-token-0001'",
    "re-point a recipient": "UPDATE outbox.recipients SET email = 'evil@example.com'",
}

# Beyond L1: what the worker may do and the receiver may not.
NOT_FOR_WEBHOOKS = {
    "take a lease": "UPDATE outbox.deliveries SET lease_owner = 'x', attempts = attempts + 1",
    "reschedule": "UPDATE outbox.deliveries SET next_attempt_at = now()",
    "rewrite a provider message id": "UPDATE outbox.deliveries SET provider_message_id = 'x'",
    "deactivate a device": "UPDATE outbox.devices SET active = false, deactivated_at = now()",
    "touch rate buckets": "DELETE FROM outbox.rate_buckets",
    "touch breakers": "UPDATE outbox.provider_breakers SET failures = 0",
    "read template data": "SELECT data FROM outbox.notifications",
    "read templates": "SELECT body FROM outbox.templates",
    "record a send": "INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, "
    "worker) VALUES (1, 1, 'sent', 1, 'webhook:twilio')",
    "forge a receipt's delivered without a delivery": "INSERT INTO outbox.events (kind, worker) "
    "VALUES ('delivered', 'webhook:twilio')",
    "prune": "SELECT * FROM outbox.prune_deliveries(0, now(), 10)",
    "purge the DLQ": "SELECT outbox.purge_dead(p_before => now())",
    "enqueue": "SELECT outbox.enqueue(message_id => 'x', address => 'a@example.com', "
    "template => 'order_confirmed')",
}

# What the worker never writes, though the receiver may.
NOT_FOR_WORKER = {
    "forge a receipt": "INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt,"
    " worker, detail) VALUES (1, 1, 'receipt', 1, 'webhook:twilio', "
    '\'{"provider": "twilio", "event_id": "x"}\')',
    "mark delivered": "UPDATE outbox.deliveries SET delivered_at = now()",
    "write preferences": "INSERT INTO outbox.preferences (recipient_id, channel, opted_in) "
    "VALUES (1, 'email', false)",
}


def _refused(url: str, statements: dict[str, str]) -> dict[str, str]:
    """Each statement run as ``url``'s role in its own rolled-back transaction: those
    that were NOT refused with insufficient_privilege, with what happened instead."""
    wrong: dict[str, str] = {}
    with psycopg.connect(url) as conn:
        for what, statement in statements.items():
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                pass
            except psycopg.Error as exc:
                wrong[what] = f"{type(exc).__name__}: {exc}".strip()
            else:
                wrong[what] = "allowed"
            conn.rollback()
    return wrong


def _snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything the refused statements could have touched."""
    out = {}
    for table in ("deliveries", "events", "notifications", "devices", "recipients"):
        out[table] = conn.execute(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM outbox.{table} t"
        ).fetchone()[0]
    conn.commit()
    return out


def _drain(worker: Any, rounds: int = 50) -> None:
    """Run the worker until two rounds in a row find nothing due (a retry may be)."""

    async def go() -> None:
        idle = False
        try:
            for _ in range(rounds):
                if await worker.run_once() > 0:
                    idle = False
                    continue
                if idle:
                    return
                idle = True
                await asyncio.sleep(0.1)
        finally:
            await worker.close()

    asyncio.run(go())


def _prune(url: str, **kw: Any) -> ops.PruneResult:
    async def go() -> ops.PruneResult:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
            result = await ops.prune_exclusive(aconn, **kw)
            assert result is not None
            return result

    return asyncio.run(go())


def _statuses(conn: psycopg.Connection, message_id: str) -> dict[str, str]:
    rows = conn.execute(
        """SELECT d.channel::text, d.status::text FROM outbox.deliveries d
           JOIN outbox.notifications n ON n.id = d.notification_id WHERE n.message_id = %s""",
        [message_id],
    ).fetchall()
    conn.commit()
    return dict(rows)


def _age_everything(conn: psycopg.Connection, days: int) -> None:
    """Make all history ``days`` older (as the superuser; events refuse UPDATE, so their
    guard trigger is lifted for this alone)."""
    conn.execute(
        "UPDATE outbox.notifications SET created_at = created_at - make_interval(days => %s)",
        [days],
    )
    conn.execute(
        "UPDATE outbox.deliveries SET created_at = created_at - make_interval(days => %(d)s), "
        "finished_at = finished_at - make_interval(days => %(d)s)",
        {"d": days},
    )
    conn.execute("ALTER TABLE outbox.events DISABLE TRIGGER events_append_only")
    conn.execute(
        "UPDATE outbox.events SET created_at = created_at - make_interval(days => %s)", [days]
    )
    conn.execute("ALTER TABLE outbox.events ENABLE TRIGGER events_append_only")
    conn.commit()


@pytest.fixture
def world(conn: psycopg.Connection) -> psycopg.Connection:
    """user-7 (email, phone, an APNs and an FCM device), templates; Ann for the receipts."""
    factories.seven(conn)
    factories.recipient(conn, "ann", email=ANN_EMAIL, phone=ANN_PHONE)
    conn.commit()
    return conn


# -- outbox_worker -------------------------------------------------------------------------


def test_worker_role_does_all_a_worker_does(world, db_url, login):
    """Claim, record every kind of outcome, recover a lease, release, rate limits,
    breakers, DLQ requeue and purge, and retention: all as a member of outbox_worker."""
    url = login("outbox_worker")
    world.execute(
        "INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst) "
        "VALUES ('recipient', 'sms', 100, 100), ('provider', 'scripted', 1000, 1000)"
    )
    world.commit()
    provider = ScriptedProvider(
        script={
            # mixed: the SMS dies (STOP: the number is suppressed), the APNs token is dead
            # (deactivated), the FCM send is retried once, the email is sent.
            "+14155550107": [Outcome.sent("sms-1"), Outcome.dead_destination("twilio: STOP")],
            "apns-token-0001": [Outcome.sent("apns-1"), Outcome.dead_destination("Unregistered")],
            "fcm-token-0002": [Outcome.sent("fcm-1"), Outcome.retry("fcm: 503")],
        }
    )
    worker = make_worker(url, provider, backoff_base_seconds=0.01, backoff_cap_seconds=0.01)
    # One after the other: the script answers each destination's sends in order.
    factories.enqueue_committed(world, "all-sent")
    _drain(worker)
    factories.enqueue_committed(world, "mixed", data={"order": 2})
    factories.enqueue_committed(
        world, "too-late", expires_at=datetime.now(UTC) + timedelta(milliseconds=1)
    )
    _drain(worker)
    assert _statuses(world, "all-sent") == {"email": "sent", "sms": "sent", "push": "sent"}
    mixed = world.execute(
        """SELECT d.destination, d.status::text, d.attempts FROM outbox.deliveries d
           JOIN outbox.notifications n ON n.id = d.notification_id
           WHERE n.message_id = 'mixed' ORDER BY d.id"""
    ).fetchall()
    assert {dest: (status, attempts) for dest, status, attempts in mixed} == {
        "seven@example.com": ("sent", 1),
        "+14155550107": ("dead", 1),
        "apns-token-0001": ("dead", 1),
        "fcm-token-0002": ("sent", 2),
    }
    assert set(_statuses(world, "too-late").values()) == {"expired"}
    assert world.execute(
        "SELECT active, deactivated_reason FROM outbox.devices WHERE token = 'apns-token-0001'"
    ).fetchone() == (False, "scripted: Unregistered")
    assert world.execute("SELECT count(*) FROM outbox.suppressions").fetchone()[0] == 1
    assert world.execute("SELECT count(*) FROM outbox.rate_buckets").fetchone()[0] > 0
    world.commit()

    # A lease left by a worker that died is recovered; one claimed and not started is
    # released at shutdown (attempt refunded).
    factories.enqueue_committed(world, "orphan", channels=["email"])
    factories.enqueue_committed(world, "released", recipient="ann", channels=["sms"])
    world.execute(
        """UPDATE outbox.deliveries d SET status = 'processing', attempts = 1,
                  lease_owner = 'dead-worker', lease_expires_at = now() - interval '1 second'
           FROM outbox.notifications n
           WHERE n.id = d.notification_id AND n.message_id = 'orphan'"""
    )
    world.commit()

    async def recover_and_release() -> None:
        stalled = ScriptedProvider()
        stalled.gate = asyncio.Event()  # never set: the send stays in flight
        worker = make_worker(url, stalled, channels=("sms",), shutdown_grace_seconds=0)
        assert (await worker.recover_leases()).recovered == 1
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))  # heartbeats, listens, then releases
        async with asyncio.timeout(10):
            while not stalled.calls:
                await asyncio.sleep(0.01)
        stop.set()
        await running

    asyncio.run(recover_and_release())
    assert _statuses(world, "orphan") == {"email": "pending"}
    assert _statuses(world, "released") == {"sms": "pending"}

    # The DLQ, as `outbox dlq` runs it with the worker's role.
    with psycopg.connect(url) as w:
        dead = dlq.list_dead(w)
        assert {d["destination"] for d in dead} == {"+14155550107", "apns-token-0001"}
        assert dlq.requeue(w, actor="cli:test", delivery_ids=[dead[0]["delivery_id"]]) == 1
        w.commit()
        assert dlq.purge(w, actor="test", before=datetime.now(UTC) + timedelta(seconds=1)) == 1
        w.commit()

    # Retention, as the workers' housekeeping and `outbox prune` run it.
    _drain(make_worker(url, ScriptedProvider()))
    _age_everything(world, 40)
    result = _prune(url, older_than=timedelta(days=30), batch_size=2)
    assert result.deliveries >= 9 and result.notifications >= 2 and result.events > 0
    assert (
        world.execute(
            "SELECT count(*) FROM outbox.deliveries WHERE status NOT IN ('pending', 'processing')"
        ).fetchone()[0]
        == 0
    )
    world.commit()


def test_worker_role_is_refused_what_it_never_does(world, db_url, login):
    """L1: as outbox_worker, every rewrite, deletion and forgery of the finding fails."""
    url = login("outbox_worker")
    factories.enqueue_committed(world, "target")
    _drain(make_worker(db_url, ScriptedProvider()))
    before = _snapshot(world)
    assert _refused(url, L1 | NOT_FOR_WORKER) == {}
    assert _snapshot(world) == before


# -- outbox_webhooks -----------------------------------------------------------------------


def test_webhooks_role_applies_receipts_of_every_provider(world, db_url, hooks, serve):
    """The receiver, as outbox_webhooks (test_webhooks' ``serve``), applies each provider's
    receipts end to end: delivered, dead with suppression, and opt-outs."""
    tw = sent(world, db_url, "twilio", "sms", "tw", recipient="ann")
    assert hooks.twilio(twilio_params(tw, "delivered")).status_code == 200
    assert delivery(world, "tw")["status"] == "delivered"

    stop = sent(world, db_url, "twilio", "sms", "tw-stop", recipient="user-7")
    assert hooks.twilio(twilio_params(stop, "failed", ErrorCode="21610")).status_code == 200
    assert delivery(world, "tw-stop")["status"] == "dead"

    sg = sent(world, db_url, "sendgrid", "email", "sg", recipient="ann")
    bounce = sendgrid_event(sg, "bounce", type="bounce", status="5.1.1", reason="550 no such user")
    assert hooks.sendgrid([sendgrid_event(sg, "processed"), bounce]).status_code == 200
    assert delivery(world, "sg")["status"] == "dead"
    spam = sent(world, db_url, "sendgrid", "email", "sg-spam", recipient="user-7")
    assert (
        hooks.sendgrid(
            [sendgrid_event(spam, "delivered", email="seven@example.com")]
            + [sendgrid_event(spam, "spamreport", email="seven@example.com")]
        ).status_code
        == 200
    )
    assert delivery(world, "sg-spam")["status"] == "delivered"

    vonage = serve(base_config(vonage_signature_method="md5hash"))
    vo = sent(world, db_url, "vonage", "sms", "vo", recipient=None, address="+14155550199")
    assert vonage.vonage(vonage_dlr(vo, "failed", "9"), method="md5hash").status_code == 200
    assert delivery(world, "vo")["status"] == "dead"

    mc = sent(world, db_url, "mailchimp", "email", "mc", recipient=None, address="m@example.com")
    mc_ok = sent(world, db_url, "mailchimp", "email", "mc-ok", recipient=None, address="k@ex.com")
    batch = [
        mailchimp_event(mc, "hard_bounce", bounce_description="bad_mailbox"),
        mailchimp_event(mc_ok, "send"),
    ]
    assert hooks.mailchimp(batch).status_code == 200
    assert delivery(world, "mc")["status"] == "dead"
    assert delivery(world, "mc-ok")["status"] == "delivered"

    assert set(suppressions(world)) == {
        ("sms", "+14155550107"),
        ("email", ANN_EMAIL),
        ("sms", "+14155550199"),
        ("email", "m@example.com"),
    }
    assert world.execute(
        """SELECT p.channel::text, p.opted_in FROM outbox.preferences p
           JOIN outbox.recipients r ON r.id = p.recipient_id WHERE r.external_id = 'user-7'
           ORDER BY 1"""
    ).fetchall() == [("email", False), ("sms", False)]
    kinds = world.execute(
        "SELECT kind, count(*) FROM outbox.events WHERE worker LIKE 'webhook:%%' GROUP BY 1"
    ).fetchall()
    assert dict(kinds) == {"receipt": 9, "delivered": 3, "dead": 4}
    world.commit()


def test_webhooks_role_is_refused_what_receipts_never_need(world, db_url, login):
    """L1: as outbox_webhooks, the finding's writes and the worker's fail alike."""
    url = login("outbox_webhooks")
    factories.enqueue_committed(world, "target")
    _drain(make_worker(db_url, ScriptedProvider()))
    before = _snapshot(world)
    assert _refused(url, L1 | NOT_FOR_WEBHOOKS) == {}
    assert _snapshot(world) == before


def test_the_receiver_checks_its_role_at_start_up(db_url, login):
    """`outbox webhooks` names the setting when its login may not apply receipts, and
    store.check_role lists what a broader login holds beyond outbox_webhooks."""
    with psycopg.connect(login("outbox_webhooks")) as conn:
        own = store.check_role(conn)
    assert own.missing == [] and own.excess == []
    with psycopg.connect(login("outbox_worker")) as conn:
        worker = store.check_role(conn)
    assert "UPDATE outbox.deliveries (delivered_at)" in worker.missing
    assert "UPDATE outbox.deliveries (destination)" not in worker.excess
    with psycopg.connect(db_url) as conn:
        owner = store.check_role(conn)
    assert owner.missing == []
    assert {"DELETE outbox.events", "UPDATE outbox.deliveries (destination)"} <= set(owner.excess)

    if not any(c.name == "webhooks" for c in app.registered_commands):
        _register()
    out = CliRunner().invoke(
        app,
        ["webhooks", "--port", "0"],
        env={
            "OUTBOX_DATABASE_URL": db_url,
            "OUTBOX_WEBHOOKS_DATABASE_URL": login("outbox_reader"),
            "OUTBOX_TWILIO_AUTH_TOKEN": "x" * 32,
        },
    )
    assert out.exit_code == 2, out.output
    assert "OUTBOX_WEBHOOKS_DATABASE_URL" in out.output
    assert "may not apply receipts" in out.output and "outbox_webhooks" in out.output
    # A value that is no libpq URL is refused naming the setting, never quoting it.
    bad = CliRunner().invoke(
        app,
        ["webhooks", "--port", "0"],
        env={
            "OUTBOX_DATABASE_URL": db_url,
            "OUTBOX_WEBHOOKS_DATABASE_URL": "mysql://hooks:s3cret@db/outbox",
            "OUTBOX_TWILIO_AUTH_TOKEN": "x" * 32,
        },
    )
    assert bad.exit_code != 0 and "OUTBOX_WEBHOOKS_DATABASE_URL" in bad.output
    assert "s3cret" not in bad.output


def test_the_receivers_database_password_is_redacted_like_the_workers():
    settings = Settings(
        _env_file=None, webhooks_database_url="postgresql://outbox_hooks:p%40ss@db:5432/shop"
    )
    assert {"p%40ss", "p@ss"} <= set(settings.secret_values())


# -- retention -----------------------------------------------------------------------------


def test_events_refuse_delete_except_through_retention(world, db_url):
    """Even the schema owner cannot delete audit events by hand; retention still can."""
    factories.enqueue_committed(world, "kept")
    _drain(make_worker(db_url, ScriptedProvider()))
    with pytest.raises(psycopg.Error) as refused:
        world.execute("DELETE FROM outbox.events")
    assert refused.value.sqlstate == "OB005"
    assert "append-only" in str(refused.value) and "outbox.prune_" in str(refused.value)
    world.rollback()
    # A whole delivery history still goes, through the retention functions.
    _age_everything(world, 40)
    assert _prune(db_url, older_than=timedelta(days=30)).deliveries == 4
    assert world.execute("SELECT count(*) FROM outbox.events").fetchone()[0] == 0


def test_retention_functions_are_definer_pinned_and_only_for_the_worker(conn):
    rows = conn.execute(
        """SELECT p.proname, p.prosecdef, p.proconfig,
                  has_function_privilege('public', p.oid, 'EXECUTE'),
                  has_function_privilege('outbox_worker', p.oid, 'EXECUTE'),
                  has_function_privilege('outbox_webhooks', p.oid, 'EXECUTE'),
                  has_function_privilege('outbox_producer', p.oid, 'EXECUTE')
           FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace
             AND (p.proname LIKE 'prune\\_%%' AND p.proname <> 'prune_rate_buckets'
                  OR p.proname = 'purge_dead')
           ORDER BY 1"""
    ).fetchall()
    assert [r[0] for r in rows] == [
        "prune_deliveries",
        "prune_notifications",
        "prune_orphan_notifications",
        "prune_standalone_events",
        "purge_dead",
    ]
    for name, definer, config, public, worker, webhooks, producer in rows:
        assert definer, name
        assert config[0] == "search_path=pg_catalog, pg_temp", name
        assert (public, worker, webhooks, producer) == (False, True, False, False), name
