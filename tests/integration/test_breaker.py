"""Circuit breakers shared through PostgreSQL: the SQL rules, and workers sharing them."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import structlog
from prometheus_client import REGISTRY

import outbox
from outbox.providers.base import Outcome
from outbox.workers.breaker.rules import Breaker, BreakerPolicy, Tally, claim_probe, record
from outbox.workers.config import WorkerConfig
from outbox.workers.worker import Worker
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PROVIDERS = ("apns", "sendgrid", "twilio")


# -- the SQL functions against the pure rules ---------------------------------------------


def _row_as_breaker(row) -> Breaker:
    state, failures, trips, opened_at, retry_at, reason, owner, probe_expires_at = row
    return Breaker(state, failures, trips, opened_at, retry_at, reason, owner, probe_expires_at)


def _table(conn) -> dict[str, Breaker]:
    rows = conn.execute("""
        SELECT provider, state::text, failures, trips, opened_at, retry_at, reason, probe_owner,
               probe_expires_at
        FROM outbox.provider_breakers""").fetchall()
    return {r[0]: _row_as_breaker(r[1:]) for r in rows}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sql_applies_the_same_rules_as_the_pure_module(conn, seed):
    """Random histories of batches and probe claims, by three workers: SQL == Python."""
    rng = random.Random(seed)
    policy = BreakerPolicy(
        failure_threshold=rng.choice([1, 2, 4]),
        cooldown_seconds=0.25,
        cooldown_cap_seconds=1.5,
        probe_seconds=0.5,
    )
    expected = {p: Breaker() for p in PROVIDERS}
    now = T0
    for step in range(400):
        now += timedelta(milliseconds=rng.choice([0, 1, 50, 200, 400, 900]))
        worker = rng.choice(["w1", "w2", "w3"])
        if rng.random() < 0.3:
            conn.execute(
                "SELECT count(*) FROM outbox.breaker_refresh(%s, %s, %s, %s)",
                [worker, list(PROVIDERS), policy.probe_seconds, now],
            )
            expected = {
                p: claim_probe(b, worker=worker, now=now, policy=policy)
                for p, b in expected.items()
            }
        else:
            names = sorted(rng.sample(PROVIDERS, rng.randint(1, 3)))
            tallies = {}
            for n in names:
                failures, configs = rng.choice([0, 1, 2]), int(rng.random() < 0.05)
                # As outbox.workers.breaker.rules.tally makes them: a reason only with a failure.
                reason = rng.choice([None, f"r{step}"]) if failures or configs else None
                tallies[n] = Tally(rng.choice([0, 0, 1, 3]), failures, configs, reason)
            conn.execute(
                "SELECT count(*) FROM outbox.breaker_record("
                "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    worker,
                    names,
                    [tallies[n].successes for n in names],
                    [tallies[n].failures for n in names],
                    [tallies[n].configs for n in names],
                    [tallies[n].reason for n in names],
                    policy.failure_threshold,
                    policy.cooldown_seconds,
                    policy.cooldown_cap_seconds,
                    now,
                ],
            )
            for n in names:
                expected[n] = record(expected[n], tallies[n], worker=worker, now=now, policy=policy)
        table = _table(conn)
        assert {p: table.get(p, Breaker()) for p in PROVIDERS} == expected, f"step {step}"


def test_the_schema_refuses_an_open_breaker_without_times(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO outbox.provider_breakers (provider, state, trips) VALUES ('x', 'open', 1)"
        )


# -- workers sharing breakers -----------------------------------------------------------------


@pytest.fixture
def world(conn):
    for i in range(12):
        factories.recipient(conn, f"user-{i}", email=f"user{i}@example.com")
    factories.templates(conn, channels=("email",))
    conn.commit()
    return conn


def _enqueue(conn, n: int, prefix: str) -> None:
    for i in range(n):
        outbox.enqueue(
            conn,
            f"{prefix}-{i}",
            recipient=f"user-{i % 12}",
            template="order_confirmed",
            data={"order": i},
            channels=["email"],
        )
    conn.commit()


def _worker(db_url, providers, worker_id, **config) -> Worker:
    config = {
        "poll_interval_seconds": 0.2,
        "backoff_base_seconds": 0.01,
        "backoff_cap_seconds": 0.01,
        "breaker_failure_threshold": 3,
        "breaker_cooldown_seconds": 0.5,
        "breaker_cooldown_cap_seconds": 2.0,
        "breaker_probe_seconds": 5.0,
        **config,
    }
    return Worker(
        db_url,
        {p.name: p for p in providers},
        {"email": [p.name for p in providers]},
        WorkerConfig(**config),
        worker_id=worker_id,
        rand=lambda: 0.0,
    )


def _failing(name: str, outcome: Outcome) -> ScriptedProvider:
    provider = ScriptedProvider(name)

    async def send(message):
        provider.calls.append(message)
        return outcome

    provider.send = send  # type: ignore[method-assign]
    return provider


def _breaker(conn, provider: str):
    conn.commit()  # a fresh snapshot
    return conn.execute(
        "SELECT state::text, failures, trips, reason FROM outbox.provider_breakers "
        "WHERE provider = %s",
        [provider],
    ).fetchone()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_failures_seen_by_one_worker_move_every_workers_traffic(world, db_url):
    sendgrid = _failing("sendgrid", Outcome.unknown("SendGrid 503: unavailable"))
    mailchimp = ScriptedProvider("mailchimp")
    a = _worker(db_url, [sendgrid, mailchimp], "worker-a")
    b = _worker(db_url, [sendgrid, mailchimp], "worker-b")

    async def go():
        with structlog.testing.capture_logs() as logs:
            _enqueue(world, 3, "first")
            await a.run_once()  # three 503s: the threshold
            assert (a.breakers.state("sendgrid"), b.breakers.state("sendgrid")) == (
                "open",
                "closed",
            )
            # What housekeeping does every second:
            await b.breakers.refresh(await b.connections.get("house"))
            assert b.breakers.state("sendgrid") == "open"
            _enqueue(world, 6, "second")
            while await b.run_once():
                pass
        await a.close()
        await b.close()
        return logs

    logs = asyncio.run(go())
    assert len(sendgrid.calls) == 3
    # The new messages and the retries of the failed ones: all through the next provider.
    assert sorted(m.message_id for m in mailchimp.calls) == sorted(
        [f"first-{i}" for i in range(3)] + [f"second-{i}" for i in range(6)]
    )
    assert world.execute(
        "SELECT array_agg(DISTINCT status::text) FROM outbox.deliveries"
    ).fetchone()[0] == ["sent"]
    assert _breaker(world, "sendgrid") == ("open", 3, 1, "sendgrid: SendGrid 503: unavailable")
    opened = [e for e in logs if e["event"] == "provider.breaker_opened"]
    assert len(opened) == 1 and opened[0]["log_level"] == "warning"
    assert (opened[0]["provider"], opened[0]["worker"], opened[0]["failures"]) == (
        "sendgrid",
        "worker-a",
        3,
    )
    assert _sample("outbox_provider_breaker_state", provider="sendgrid") == 2


def test_one_worker_probes_after_the_cool_down_and_a_success_closes(world, db_url):
    sendgrid = ScriptedProvider("sendgrid")
    mailchimp = ScriptedProvider("mailchimp")
    a = _worker(db_url, [sendgrid, mailchimp], "worker-a", breaker_cooldown_seconds=0.3)
    b = _worker(db_url, [sendgrid, mailchimp], "worker-b", breaker_cooldown_seconds=0.3)
    world.execute("""
        INSERT INTO outbox.provider_breakers
            (provider, state, failures, trips, opened_at, retry_at, reason)
        VALUES ('sendgrid', 'open', 3, 1, now(), now() + interval '0.3 s', 'x')""")
    world.commit()

    async def go():
        with structlog.testing.capture_logs() as logs:
            await a.breakers.refresh(await a.connections.get("house"))
            await b.breakers.refresh(await b.connections.get("house"))
            assert a.breakers.state("sendgrid") == "open"  # cool-down not over
            await asyncio.sleep(0.35)
            await a.breakers.refresh(await a.connections.get("house"))
            await b.breakers.refresh(await b.connections.get("house"))
            assert (a.breakers.state("sendgrid"), b.breakers.state("sendgrid")) == (
                "half_open",
                "half_open",
            )
            assert (a.breakers.available("sendgrid"), b.breakers.available("sendgrid")) == (
                True,
                False,
            )
            _enqueue(world, 4, "m")
            await b.run_once(limit=2)  # not the probe's owner: the next provider
            await a.run_once(limit=2)  # one probe message, then the rest elsewhere
        await a.close()
        await b.close()
        return logs

    logs = asyncio.run(go())
    assert len(sendgrid.calls) == 1
    assert len(mailchimp.calls) == 3
    assert _breaker(world, "sendgrid") == ("closed", 0, 0, "x")
    events = [(e["event"], e["worker"]) for e in logs if e["event"].startswith("provider.breaker")]
    assert events == [
        ("provider.breaker_half_open", "worker-a"),
        ("provider.breaker_probe", "worker-a"),
        ("provider.breaker_closed", "worker-a"),
    ]
    assert a.breakers.state("sendgrid") == "closed"


def test_a_config_outcome_opens_at_once_alerts_and_burns_no_attempt(world, db_url):
    sendgrid = _failing("sendgrid", Outcome.config("SendGrid 401: bad key"))
    a = _worker(
        db_url,
        [sendgrid],
        "worker-a",
        breaker_cooldown_seconds=60.0,
        breaker_cooldown_cap_seconds=60.0,
    )
    before = _sample("outbox_provider_config_errors_total", provider="sendgrid")

    async def go():
        with structlog.testing.capture_logs() as logs:
            _enqueue(world, 2, "first")
            await a.run_once()
            _enqueue(world, 2, "second")
            await a.run_once()  # no provider left: deferred, not sent, not counted
        await a.close()
        return logs

    logs = asyncio.run(go())
    # The first config answer suspended SendGrid in this worker at once, before the
    # second message of the same batch was routed; nothing was sent after that.
    assert len(sendgrid.calls) == 1
    assert _breaker(world, "sendgrid")[0] == "open"
    alerts = [e for e in logs if e["event"] == "provider.misconfigured"]
    assert (
        alerts
        and alerts[0]["log_level"] == "error"
        and alerts[0]["reason"] == "sendgrid: SendGrid 401: bad key"
    )
    assert _sample("outbox_provider_config_errors_total", provider="sendgrid") == before + 1
    rows = world.execute("""
        SELECT n.message_id, d.status::text, d.attempts,
               extract(epoch FROM d.next_attempt_at - now())::float8
        FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id
        ORDER BY n.message_id""").fetchall()
    assert {r[1] for r in rows} == {"pending"} and {r[2] for r in rows} == {0}
    # Deferred until the breaker's retry_at, about a minute away.
    waits = {r[0]: r[3] for r in rows}
    assert 50 < waits["second-0"] < 70 and 50 < waits["second-1"] < 70
    (kinds,) = world.execute("""
        SELECT array_agg(e.kind ORDER BY e.id) FROM outbox.events e
        JOIN outbox.notifications n ON n.id = e.notification_id
        WHERE n.message_id = 'second-0' AND e.delivery_id IS NOT NULL""").fetchone()
    # Claimed, never started (no provider would take it): no 'processing' event.
    assert kinds == ["created", "deferred"]
