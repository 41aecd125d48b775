"""Housekeeping tasks, each run once against a real PostgreSQL, and the scheduler running them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from prometheus_client import REGISTRY

from outbox import metrics
from outbox.ops import Pruner
from outbox.workers import store
from outbox.workers.breaker import BreakerPolicy, Breakers
from outbox.workers.connections import Connections
from outbox.workers.delivery import Leases
from outbox.workers.housekeeping import (
    BreakerRefresh,
    Gauges,
    Heartbeat,
    LeaseRecovery,
    Pruning,
    Recovered,
    Scheduler,
)
from tests import factories


@pytest.fixture
def world(conn):
    return factories.seven(conn, fcm=False)


def _run(coro_fn, db_url):
    """Run ``coro_fn(aconn)`` on a worker-style connection to the test's database."""

    async def go():
        aconn = await store.connect(db_url, "test housekeeping")
        try:
            return await coro_fn(aconn)
        finally:
            await aconn.close()

    return asyncio.run(go())


def _lease_lapsed(conn, owner: str = "gone", *, started: bool = True) -> None:
    """Every delivery claimed at attempt 1 by ``owner``, whose lease has lapsed; with
    ``started``, its provider call had begun (its 'processing' event, as the worker's
    start statement writes it)."""
    conn.execute(
        """UPDATE outbox.deliveries SET status = 'processing', attempts = 1,
                    lease_owner = %s, lease_expires_at = now() - interval '1 second'""",
        [owner],
    )
    if started:
        conn.execute(
            """INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker)
               SELECT notification_id, id, 'processing', 1, %s FROM outbox.deliveries""",
            [owner],
        )
    conn.commit()


def test_lease_recovery_returns_an_expired_lease_to_pending_and_writes_the_event(world, db_url):
    factories.enqueue_committed(world, "m-1", channels=["email"])
    _lease_lapsed(world)
    seen: list[Recovered] = []
    task = LeaseRecovery("w-house", interval_seconds=5.0, on_recovered=seen.append)

    assert _run(task.run_once, db_url) == (1, 0, 0)
    assert seen == [Recovered(recovered=1, dead=0)]
    row = world.execute(
        "SELECT status::text, lease_owner, in_doubt FROM outbox.deliveries"
    ).fetchone()
    assert row == ("pending", None, 1)
    event = world.execute(
        "SELECT kind, worker, detail FROM outbox.events WHERE kind = 'recovered'"
    ).fetchone()
    assert event == ("recovered", "w-house", {"previous_owner": "gone", "in_doubt": True})
    # A second pass finds nothing and does not call back.
    assert _run(task.run_once, db_url) == (0, 0, 0)
    assert len(seen) == 1


def test_lease_recovery_of_an_attempt_that_never_started_counts_no_doubt(world, db_url):
    """Claimed, but its worker died before the provider call (no 'processing' event of
    that attempt): nothing can have been sent, so in_doubt stays 0."""
    factories.enqueue_committed(world, "m-1", channels=["email"])
    _lease_lapsed(world, started=False)
    # A 'processing' event of an earlier attempt does not count for this one.
    world.execute(
        """INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker)
           SELECT notification_id, id, 'processing', 0, 'older' FROM outbox.deliveries"""
    )
    world.commit()
    task = LeaseRecovery("w-house", interval_seconds=5.0, on_recovered=lambda _: None)

    assert _run(task.run_once, db_url) == (1, 0, 0)
    row = world.execute(
        "SELECT status::text, lease_owner, in_doubt FROM outbox.deliveries"
    ).fetchone()
    assert row == ("pending", None, 0)
    event = world.execute("SELECT detail FROM outbox.events WHERE kind = 'recovered'").fetchone()[0]
    assert event == {"previous_owner": "gone", "in_doubt": False}


def test_lease_recovery_leaves_live_leases_alone(world, db_url):
    factories.enqueue_committed(world, "m-1", channels=["email"])
    world.execute("""UPDATE outbox.deliveries SET status = 'processing', attempts = 1,
                     lease_owner = 'alive', lease_expires_at = now() + interval '1 minute'""")
    world.commit()
    assert _run(LeaseRecovery("w-house", interval_seconds=5.0).run_once, db_url) == (0, 0, 0)
    assert world.execute("SELECT status::text FROM outbox.deliveries").fetchone() == ("processing",)


def test_heartbeat_extends_only_the_leases_this_worker_holds(world, db_url):
    factories.enqueue_committed(world, "mine", channels=["email"])
    factories.enqueue_committed(world, "theirs", channels=["sms"])
    leases = Leases()

    async def go(aconn):
        rows = await store.claim(
            aconn, worker="w-hb", channels=["email", "sms"], limit=10, lease_seconds=2
        )
        for row in rows:
            if row.message_id == "mine":
                leases.hold(row)
        # The other one now belongs to someone else: a heartbeat must not touch it.
        await aconn.execute("""UPDATE outbox.deliveries SET lease_owner = 'other'
                               WHERE channel = 'sms'""")
        heartbeat = Heartbeat("w-hb", leases, lease_seconds=600, interval_seconds=1)
        return await heartbeat.run_once(aconn)

    assert _run(go, db_url) == 1
    left = dict(
        world.execute("""
        SELECT channel::text, extract(epoch FROM lease_expires_at - now())::float8
        FROM outbox.deliveries""").fetchall()
    )
    assert left["email"] > 500
    assert left["sms"] < 3


def test_heartbeat_with_nothing_held_sends_no_statement(db_url):
    # No connection at all: run_once must not use it.
    assert asyncio.run(Heartbeat("w", Leases(), 30, 10).run_once(None)) == 0  # type: ignore[arg-type]


def test_gauges_set_the_queue_metrics(world, db_url):
    for i in range(3):
        factories.enqueue_committed(world, f"m-{i}", channels=["email"])
    factories.enqueue_committed(
        world, "later", channels=["email"], send_at=datetime.now(UTC) + timedelta(days=30)
    )
    values = _run(Gauges(metrics.QueueGauges(interval_seconds=1)).run_once, db_url)
    assert values["due"]["email"] == 3
    assert REGISTRY.get_sample_value("outbox_queue_due", {"channel": "email"}) == 3
    assert (
        REGISTRY.get_sample_value("outbox_queue_depth", {"channel": "email", "status": "pending"})
        == 4
    )
    assert REGISTRY.get_sample_value("outbox_queue_due", {"channel": "sms"}) == 0


def test_breaker_refresh_reads_the_shared_state_and_claims_a_due_probe(world, db_url):
    world.execute("""INSERT INTO outbox.provider_breakers
                       (provider, state, failures, trips, opened_at, retry_at, reason)
                     VALUES ('sendgrid', 'open', 10, 1, now() - interval '1 minute',
                             now() - interval '1 second', '503'),
                            ('twilio', 'open', 10, 1, now(), now() + interval '1 hour', '503')""")
    world.commit()
    breakers = Breakers(BreakerPolicy(), "w-probe", ["sendgrid", "twilio", "vonage"])
    assert breakers.available("twilio")  # nothing read yet: closed

    _run(BreakerRefresh(breakers).run_once, db_url)
    assert (breakers.state("sendgrid"), breakers.state("twilio"), breakers.state("vonage")) == (
        "half_open",
        "open",
        "closed",
    )
    assert (breakers.available("sendgrid"), breakers.available("twilio")) == (True, False)
    assert world.execute(
        "SELECT probe_owner FROM outbox.provider_breakers WHERE provider = 'sendgrid'"
    ).fetchone() == ("w-probe",)


def test_pruning_deletes_old_finished_history(world, db_url):
    factories.enqueue_committed(world, "old", channels=["email"])
    factories.enqueue_committed(world, "new", channels=["email"])
    world.execute("""UPDATE outbox.deliveries d SET status = 'sent', sent_at = now(),
                     finished_at = now() - CASE n.message_id WHEN 'old' THEN interval '40 days'
                                                             ELSE interval '1 day' END
                     FROM outbox.notifications n WHERE n.id = d.notification_id""")
    world.commit()
    task = Pruning(Pruner(older_than=timedelta(days=30), interval_seconds=60), rand=lambda: 0.5)
    result = _run(task.run_once, db_url)
    assert result is not None and result.deliveries == 1
    left = world.execute(
        "SELECT n.message_id FROM outbox.deliveries d "
        "JOIN outbox.notifications n ON n.id = d.notification_id"
    ).fetchall()
    assert left == [("new",)]
    # Spread over half to one and a half intervals, by the draw it is given.
    assert task.delay(first=True) == 60


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Heartbeat("w", Leases(), lease_seconds=10, interval_seconds=20),
            "must not exceed lease_seconds",
        ),
        (
            lambda: Heartbeat("w", Leases(), lease_seconds=0, interval_seconds=0),
            "Heartbeat.lease_seconds must be positive",
        ),
        (lambda: LeaseRecovery("w", interval_seconds=0), "LeaseRecovery.interval_seconds"),
        (lambda: LeaseRecovery("w", interval_seconds=float("inf")), "positive and finite"),
        (lambda: LeaseRecovery("w", interval_seconds=1, limit=0), "limit must be at least 1"),
    ],
)
def test_tasks_validate_their_configuration(build, message):
    with pytest.raises(ValueError, match=message):
        build()


class _Failing:
    name = "failing"

    def delay(self, *, first: bool) -> float:
        return 0.0 if first else 0.02

    async def run_once(self, conn):
        raise RuntimeError("a bug in one task")


class _Counting:
    name = "counting"

    def __init__(self) -> None:
        self.runs = 0

    def delay(self, *, first: bool) -> float:
        return 0.0 if first else 0.02

    async def run_once(self, conn):
        await conn.execute("SELECT 1")
        self.runs += 1


def test_the_scheduler_runs_each_task_at_its_pace_and_outlives_a_failing_one(db_url):
    counting = _Counting()

    async def go():
        connections = Connections(db_url, "w-sched", Counter(), structlog.get_logger())
        scheduler = Scheduler("house", [_Failing(), counting], connections)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connections.close_all()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(go())
    assert counting.runs >= 5
    failures = [e for e in logs if e["event"] == "worker.housekeeping_failed"]
    assert failures and all(e["task"] == "failing" for e in failures)
