"""The worker in-process against a real PostgreSQL: claim, send, record, retry, fence, recover."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import outbox
from outbox.providers.base import Outcome
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker


@pytest.fixture
def world(conn):
    """user-7 with email, phone, an APNs and an FCM device; templates for every channel."""
    return factories.seven(conn, fcm=True)


_enqueue = factories.enqueue_committed


def _statuses(conn) -> dict[str, int]:
    return dict(
        conn.execute("SELECT status::text, count(*) FROM outbox.deliveries GROUP BY 1").fetchall()
    )


def _drain(worker, rounds: int = 50) -> None:
    async def go():
        try:
            for _ in range(rounds):
                if await worker.run_once() == 0:
                    return
        finally:
            await worker.close()

    asyncio.run(go())


def test_sends_each_delivery_once_and_writes_the_trail(world, db_url):
    for i in range(10):
        _enqueue(world, f"m-{i}", data={"order": i})
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert _statuses(world) == {"sent": 40}
    assert len(provider.calls) == 40
    assert len({m.delivery_id for m in provider.calls}) == 40
    first = next(m for m in provider.calls if m.channel == "email")
    assert (first.subject, first.body) == (
        f"Order {first.data['order']}",
        f"Order {first.data['order']} is confirmed.",
    )
    trail = world.execute("""
        SELECT array_agg(kind ORDER BY id) FROM outbox.events WHERE delivery_id IS NOT NULL
        GROUP BY delivery_id""").fetchall()
    assert {tuple(t[0]) for t in trail} == {("created", "processing", "sent")}
    row = world.execute(
        "SELECT provider, provider_message_id, template_id IS NOT NULL, attempts, "
        "lease_owner FROM outbox.deliveries LIMIT 1"
    ).fetchone()
    assert (
        row[0] == "scripted"
        and row[1].startswith("scripted-")
        and row[2]
        and row[3] == 1
        and row[4] is None
    )


class _WatchingProvider(ScriptedProvider):
    """Looks, from its own connection, at the events committed when each call begins."""

    def __init__(self, db_url: str) -> None:
        super().__init__()
        self.db_url = db_url
        self.seen: dict[int, list[tuple[str, int]]] = {}

    async def send(self, message):
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as c:
            cur = await c.execute(
                "SELECT kind, attempt FROM outbox.events WHERE delivery_id = %s "
                "AND kind = 'processing' ORDER BY id",
                (message.delivery_id,),
            )
            self.seen[message.delivery_id] = [tuple(r) for r in await cur.fetchall()]
        return await super().send(message)


def test_the_processing_event_is_committed_before_the_provider_call(world, db_url):
    """Lease recovery counts an attempt in doubt only if its 'processing' event exists,
    so that event must be visible to others before the request leaves."""
    for i in range(3):
        _enqueue(world, f"m-{i}", channels=["email", "sms"], data={"order": i})
    provider = _WatchingProvider(db_url)
    _drain(make_worker(db_url, provider))
    assert _statuses(world) == {"sent": 6}
    assert len(provider.seen) == 6
    assert all(seen == [("processing", 1)] for seen in provider.seen.values()), provider.seen


def test_a_send_whose_lease_was_lost_before_it_started_is_not_made(world, db_url):
    """The start statement is fenced: a delivery recovered (and so maybe claimed by another
    worker) between this worker's claim and its provider call is not sent by it."""
    _enqueue(world, "m-1", channels=["email"])
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider)

    class _LosesTheLease:
        """A gate that admits everything, after the lease was taken away."""

        async def admit(self, conn, rows):
            await conn.execute(
                "UPDATE outbox.deliveries SET status = 'pending', lease_owner = NULL, "
                "lease_expires_at = NULL"
            )
            return {}

    worker.gate = _LosesTheLease()
    _drain(worker, rounds=1)
    assert provider.calls == []
    assert (
        world.execute("SELECT count(*) FROM outbox.events WHERE kind = 'processing'").fetchone()[0]
        == 0
    )
    assert worker.stats["fenced"] == 1


def test_rolled_back_enqueues_are_never_seen(world, db_url):
    outbox.enqueue(
        world, "ghost", recipient="user-7", template="order_confirmed", data={"order": 1}
    )
    world.rollback()
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert provider.calls == []


def test_transient_failures_follow_the_backoff_schedule(world, db_url):
    _enqueue(world, "m-1", channels=["email"])
    fail = Outcome.retry("503 Service Unavailable")
    provider = ScriptedProvider(script={"seven@example.com": [fail, fail, fail]})
    worker = make_worker(
        db_url, provider, backoff_base_seconds=10.0, backoff_cap_seconds=25.0, rand=lambda: 0.5
    )

    async def attempt_and_read():
        await worker.run_once()
        return world.execute(
            "SELECT status::text, attempts, "
            "extract(epoch FROM next_attempt_at - updated_at)::float8, last_error "
            "FROM outbox.deliveries"
        ).fetchone()

    async def go():
        seen = []
        for _ in range(3):
            seen.append(await attempt_and_read())
            world.execute(
                "UPDATE outbox.deliveries SET next_attempt_at = now() WHERE status = 'pending'"
            )
            world.commit()
        await worker.close()
        return seen

    # Full jitter with rand = 0.5: delay = 0.5 * min(cap, base * 2^(attempt-1)).
    assert asyncio.run(go()) == [
        ("pending", 1, 5.0, "scripted: 503 Service Unavailable"),
        ("pending", 2, 10.0, "scripted: 503 Service Unavailable"),
        ("pending", 3, 12.5, "scripted: 503 Service Unavailable"),
    ]
    _drain(worker)
    assert _statuses(world) == {"sent": 1}
    kinds = [k for (k,) in world.execute("SELECT kind FROM outbox.events ORDER BY id")]
    assert kinds == ["created"] + ["processing", "retry"] * 3 + ["processing", "sent"]


def test_retry_after_is_honoured(world, db_url):
    _enqueue(world, "m-1", channels=["sms"])
    provider = ScriptedProvider(script={"+14155550107": [Outcome.retry("429", retry_after=90)]})
    _drain(make_worker(db_url, provider, rand=lambda: 0.0))
    delay = world.execute(
        "SELECT extract(epoch FROM next_attempt_at - updated_at)::float8 FROM outbox.deliveries"
    ).fetchone()[0]
    assert delay == 90.0


def test_exhaustion_goes_dead_with_the_last_error_and_requeue_revives(world, db_url):
    world.execute("UPDATE outbox.channel_config SET max_attempts = 2 WHERE channel = 'sms'")
    world.commit()
    _enqueue(world, "m-1", channels=["sms"])
    provider = ScriptedProvider(
        script={"+14155550107": [Outcome.retry("timeout"), Outcome.retry("500")]}
    )
    worker = make_worker(db_url, provider)

    async def go():
        await worker.run_once()
        world.execute("UPDATE outbox.deliveries SET next_attempt_at = now()")
        world.commit()
        await worker.run_once()
        await worker.close()

    asyncio.run(go())
    row = world.execute(
        "SELECT status::text, attempts, last_error FROM outbox.deliveries"
    ).fetchone()
    assert row == ("dead", 2, "attempts exhausted (2/2): scripted: 500")

    from outbox import dlq

    assert dlq.requeue(world, delivery_ids=[1], actor="test") == 1
    world.commit()
    assert world.execute("SELECT status::text, attempts FROM outbox.deliveries").fetchone() == (
        "pending",
        0,
    )
    _drain(make_worker(db_url, provider))
    assert _statuses(world) == {"sent": 1}


def test_permanent_failure_is_dead_at_once(world, db_url):
    _enqueue(world, "m-1", channels=["email"])
    provider = ScriptedProvider(
        script={"seven@example.com": [Outcome.permanent("400 bad request")]}
    )
    _drain(make_worker(db_url, provider))
    row = world.execute(
        "SELECT status::text, attempts, last_error FROM outbox.deliveries"
    ).fetchone()
    assert row == ("dead", 1, "scripted: 400 bad request")
    assert len(provider.calls) == 1


def test_dead_token_deactivates_the_device(world, db_url):
    _enqueue(world, "m-1", channels=["push"])
    provider = ScriptedProvider(
        script={"apns-token-0001": [Outcome.dead_destination("Unregistered")]}
    )
    _drain(make_worker(db_url, provider))
    assert world.execute(
        "SELECT token, active, deactivated_reason FROM outbox.devices ORDER BY id"
    ).fetchall() == [
        ("apns-token-0001", False, "scripted: Unregistered"),
        ("fcm-token-0002", True, None),
    ]
    _enqueue(world, "m-2", channels=["push"])
    rows = world.execute(
        "SELECT destination FROM outbox.deliveries d JOIN outbox.notifications n "
        "ON n.id = d.notification_id WHERE n.message_id = 'm-2'"
    ).fetchall()
    assert rows == [("fcm-token-0002",)]


def test_dead_address_is_suppressed(world, db_url):
    _enqueue(world, "m-1", channels=["email"])
    provider = ScriptedProvider(
        script={"seven@example.com": [Outcome.dead_destination("hard bounce")]}
    )
    _drain(make_worker(db_url, provider))
    _enqueue(world, "m-2", channels=["email"])
    assert world.execute(
        "SELECT status::text, last_error FROM outbox.deliveries ORDER BY id DESC LIMIT 1"
    ).fetchone() == ("suppressed", "suppressed address: scripted: hard bounce")


def test_template_error_goes_dead_and_the_worker_goes_on(world, db_url):
    outbox.create_template(world, "broken", "sms", "Hello {{ user.name }}")
    world.commit()
    _enqueue(world, "bad", template="broken", channels=["sms"], data={"order": 1})
    _enqueue(world, "good", channels=["sms"])
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    rows = dict(
        world.execute(
            "SELECT n.message_id, d.status::text || ': ' || coalesce(d.last_error, '') "
            "FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id"
        ).fetchall()
    )
    assert rows["good"] == "sent: "
    assert rows["bad"].startswith("dead: ") and "'broken'" in rows["bad"] and "user" in rows["bad"]
    assert [m.message_id for m in provider.calls] == ["good"]


def test_a_template_version_gone_after_the_claim_goes_dead_with_why(world, db_url, monkeypatch):
    """Versions cannot be deleted; a superuser who bypasses the guard between a claim and
    the read of the version's contents leaves nothing to render: dead, with the reason,
    never sent, and the worker goes on."""
    from outbox.workers import store

    _enqueue(world, "orphan", channels=["sms"])
    read = store.claimed_templates

    async def removed_first(aconn, ids):
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            await admin.execute("SET session_replication_role = replica")  # no triggers
            await admin.execute("DELETE FROM outbox.templates WHERE id = ANY (%s)", [list(ids)])
        return await read(aconn, ids)

    monkeypatch.setattr(store, "claimed_templates", removed_first)
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    status, error = world.execute(
        "SELECT status::text, last_error FROM outbox.deliveries"
    ).fetchone()
    assert status == "dead"
    assert "template version" in error and "not found" in error
    assert provider.calls == []


# Finite, but far longer than any render time limit: 10**9 loop steps.
CPU_BOMB = "{% for i in range(100000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x"


def test_a_cpu_bomb_template_goes_dead_while_the_worker_sends_and_records_the_rest(world, db_url):
    """T1: the bomb renders off the loop until its time limit. Meanwhile the rest of the
    batch is sent once and recorded, heartbeats keep its lease (another worker's lease
    recovery finds nothing to take), and the worker stops when told."""
    outbox.create_template(world, "cpu", "sms", CPU_BOMB)
    world.commit()
    _enqueue(world, "cpu-1", template="cpu", channels=["sms"], data={"card": "SECRET-4111"})
    for i in range(3):
        _enqueue(world, f"ok-{i}", channels=["sms"])
    provider = ScriptedProvider()
    # A lease of 1 s, shorter than the bomb's 3 s of rendering: only heartbeats keep it.
    worker = make_worker(
        db_url,
        provider,
        worker_id="worker-a",
        lease_seconds=1.0,
        recover_interval_seconds=0.3,
        render_timeout_seconds=3.0,
    )
    other = make_worker(db_url, ScriptedProvider(), worker_id="worker-b", lease_seconds=30)

    def rows() -> dict[str, str]:
        return dict(
            world.execute(
                "SELECT n.message_id, d.status::text FROM outbox.deliveries d "
                "JOIN outbox.notifications n ON n.id = d.notification_id"
            ).fetchall()
        )

    async def go() -> list[int]:
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        recovered = []
        # Until the others are recorded, with the bomb still rendering: another
        # worker's lease recovery, as in the finding, every 0.2 s.
        while True:
            recovered.append((await other.recover_leases()).recovered)
            now = await asyncio.to_thread(rows)
            if all(now[f"ok-{i}"] == "sent" for i in range(3)):
                break
            await asyncio.sleep(0.2)
        assert now["cpu-1"] == "processing"
        stop.set()  # SIGTERM: the bomb finishes at its limit, is recorded, and run() ends
        await run
        recovered.append((await other.recover_leases()).recovered)
        await other.close()
        return recovered

    recovered = asyncio.run(go())
    assert sorted(m.message_id for m in provider.calls) == ["ok-0", "ok-1", "ok-2"]
    assert recovered and set(recovered) == {0}
    dead = world.execute(
        "SELECT d.status::text, d.attempts, d.last_error FROM outbox.deliveries d "
        "JOIN outbox.notifications n ON n.id = d.notification_id WHERE n.message_id = 'cpu-1'"
    ).fetchone()
    assert dead[:2] == ("dead", 1)
    assert "'cpu'" in dead[2] and "time limit of 3 s" in dead[2] and "SECRET" not in dead[2]
    assert worker.sender.renderer.off_loop == 1
    kinds = world.execute(
        "SELECT kind FROM outbox.events WHERE delivery_id IS NOT NULL ORDER BY id"
    ).fetchall()
    assert ("recovered",) not in kinds
    # The rest of the batch was recorded while the bomb was still rendering.
    order = world.execute(
        "SELECT n.message_id FROM outbox.events e JOIN outbox.deliveries d ON d.id = e.delivery_id "
        "JOIN outbox.notifications n ON n.id = d.notification_id "
        "WHERE e.kind IN ('sent', 'dead') ORDER BY e.id"
    ).fetchall()
    assert [m for (m,) in order][-1] == "cpu-1"


def test_expired_and_cancelled_are_never_sent(world, db_url):
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    _enqueue(world, "otp", channels=["sms"], expires_at=soon)
    _enqueue(world, "cancel-me", channels=["email"])
    outbox.cancel(world, "cancel-me")
    world.commit()
    time.sleep(0.4)
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert provider.calls == []
    assert _statuses(world) == {"expired": 1, "cancelled": 1}


def test_a_stalled_worker_cannot_overwrite_the_new_owners_result(world, db_url):
    """Fencing: A claims and stalls past its lease; B recovers, claims and sends; A's late
    result is dropped."""
    _enqueue(world, "m-1", channels=["email"])
    slow = ScriptedProvider(
        "slow", script={"seven@example.com": [Outcome.permanent("A's stale view")]}
    )
    fast = ScriptedProvider("fast")
    a = make_worker(db_url, slow, worker_id="worker-a", lease_seconds=0.5)
    b = make_worker(db_url, fast, worker_id="worker-b", lease_seconds=30)

    async def go():
        slow.gate = asyncio.Event()
        a_round = asyncio.create_task(a.run_once())
        while not slow.calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.7)  # A's lease expires while it is stuck in the provider call
        assert await b.recover_leases() == (1, 0, 0)
        assert await b.run_once() == 1
        slow.gate.set()
        await a_round
        await a.close()
        await b.close()

    asyncio.run(go())
    row = world.execute(
        "SELECT status::text, attempts, provider, in_doubt FROM outbox.deliveries"
    ).fetchone()
    assert row == ("sent", 2, "fast", 1)
    assert a.stats["fenced"] == 1
    events = world.execute(
        "SELECT kind, worker FROM outbox.events WHERE delivery_id IS NOT NULL ORDER BY id"
    ).fetchall()
    assert events == [
        ("created", None),
        ("processing", "worker-a"),
        ("recovered", "worker-b"),
        ("processing", "worker-b"),
        ("sent", "worker-b"),
    ]


def test_lease_recovery_on_last_attempt_goes_dead(world, db_url):
    world.execute("UPDATE outbox.channel_config SET max_attempts = 1 WHERE channel = 'email'")
    world.commit()
    _enqueue(world, "m-1", channels=["email"])
    world.execute("""UPDATE outbox.deliveries SET status = 'processing', attempts = 1,
                     lease_owner = 'gone', lease_expires_at = now() - interval '1 second'""")
    world.commit()
    worker = make_worker(db_url, ScriptedProvider())

    async def go():
        result = await worker.recover_leases()
        await worker.close()
        return result

    assert asyncio.run(go()) == (0, 1, 0)
    row = world.execute(
        "SELECT status::text, last_error, in_doubt FROM outbox.deliveries"
    ).fetchone()
    # Its provider call never started (no 'processing' event of attempt 1): not in doubt.
    assert row == ("dead", "lease of gone expired at attempt 1 (attempts exhausted)", 0)


def test_high_priority_is_claimed_before_a_low_priority_backlog(world, db_url):
    world.execute("""
        INSERT INTO outbox.notifications (message_id, address, template_key, channels, priority)
        SELECT 'blast-' || g, 'b' || g || '@example.com', 'order_confirmed', '{email}', -10
        FROM generate_series(1, 5000) g;
        INSERT INTO outbox.deliveries
            (notification_id, channel, destination, priority, max_attempts)
        SELECT id, 'email', address, priority, 5 FROM outbox.notifications;
    """)
    world.commit()
    _enqueue(world, "login-code", channels=["sms"], priority=100)
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider, batch_size=100)

    async def go():
        await worker.run_once()
        await worker.close()

    asyncio.run(go())
    assert provider.calls[0].message_id == "login-code"


def test_idle_worker_wakes_on_commit(world, db_url):
    """With a 30 s poll, only the NOTIFY can make the send happen within the test's time."""
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider, poll_interval_seconds=30)

    async def go():
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.3)  # idle, waiting
        started = time.monotonic()
        await asyncio.to_thread(_enqueue, world, "wake", channels=["sms"])
        while not provider.calls and time.monotonic() - started < 10:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        stop.set()
        await run
        return elapsed

    assert asyncio.run(go()) < 5
    assert _statuses(world) == {"sent": 1}


def test_graceful_shutdown_finishes_in_flight_and_leaves_nothing_processing(world, db_url):
    for i in range(5):
        _enqueue(world, f"m-{i}", channels=["email"])
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider, shutdown_grace_seconds=5)

    async def go():
        provider.gate = asyncio.Event()
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        while len(provider.calls) < 5:
            await asyncio.sleep(0.01)
        stop.set()  # SIGTERM while five sends are in flight
        await asyncio.sleep(0.2)
        provider.gate.set()
        await run

    asyncio.run(go())
    assert _statuses(world) == {"sent": 5}


def test_shutdown_past_the_grace_releases_interrupted_sends_as_in_doubt(world, db_url):
    _enqueue(world, "m-1", channels=["email"])
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider, shutdown_grace_seconds=0.2)

    async def go():
        provider.gate = asyncio.Event()  # never opened: the send hangs
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        while not provider.calls:
            await asyncio.sleep(0.01)
        stop.set()
        await run

    asyncio.run(go())
    row = world.execute(
        "SELECT status::text, attempts, in_doubt, lease_owner FROM outbox.deliveries"
    ).fetchone()
    assert row == ("pending", 1, 1, None)
    assert world.execute("SELECT detail FROM outbox.events WHERE kind = 'released'").fetchone()[
        0
    ] == {"interrupted": True}


def _sessions(url: str, application_name: str) -> list[tuple[str]]:
    """The roles of the sessions whose application_name is LIKE ``application_name``."""
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(
            "SELECT split_part(application_name, ' ', 2) FROM pg_stat_activity "
            "WHERE application_name LIKE %s ORDER BY 1",
            [application_name],
        ).fetchall()


def test_a_worker_opens_its_start_and_record_connections_before_any_work(world, db_url):
    """Opened at the first send, the start marks' connection made the first wake-up
    after a start take 11.5 ms instead of 6-7: the worker opens it as it starts."""
    worker = make_worker(db_url, ScriptedProvider(), poll_interval_seconds=5)

    async def go() -> list[str]:
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        roles: list[str] = []
        started = time.monotonic()
        while len(roles) < 3 and time.monotonic() - started < 10:
            await asyncio.sleep(0.05)
            rows = await asyncio.to_thread(_sessions, db_url, f"outbox-worker % {worker.id}")
            roles = [r[0] for r in rows if r[0] in ("claim", "start", "record")]
        stop.set()
        await run
        return roles

    assert asyncio.run(go()) == ["claim", "record", "start"]
    assert _statuses(world) == {}


def test_worker_survives_a_lost_connection(world, db_url):
    """Its connections are terminated mid-run: it reconnects, re-LISTENs and finishes."""
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider, poll_interval_seconds=5)

    async def go():
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.3)
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'outbox-worker%'"
            )
        await asyncio.sleep(0.5)
        await asyncio.to_thread(_enqueue, world, "after", channels=["sms"])
        started = time.monotonic()
        while not provider.calls and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        stop.set()
        await run

    asyncio.run(go())
    assert _statuses(world) == {"sent": 1}
