"""A cancel that arrives while a delivery is in flight is remembered (finding F1).

``outbox.cancel`` cannot call back an attempt that is at the provider, but no
attempt is made after it: when the attempt's result is recorded, a success stays
``sent`` and anything else ends ``cancelled``. End to end through a real worker
and the provider sandbox (F1's reproduction), then the other races one by one
with an in-process worker whose provider and gate the test holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
import pytest
import structlog

import outbox
from outbox import dlq
from outbox.providers.base import Outcome
from outbox.workers.delivery import ClaimedDelivery
from outbox.workers.housekeeping import Recovered
from tests import factories
from tests.integration import test_providers_e2e as e2e
from tests.integration.worker_helpers import ScriptedProvider, make_worker

# The provider sandbox in its own process, and its fault client (reset around each test).
sandbox = e2e.sandbox
faults = e2e.faults

PHONE = "+14156980001"
WAIT_S = 30.0


def _delivery(conn: psycopg.Connection, message_id: str) -> dict[str, Any]:
    """The delivery of ``message_id`` (the test's only one), every column by name."""
    conn.commit()
    row = conn.execute(
        "SELECT to_jsonb(d) FROM outbox.deliveries d "
        "JOIN outbox.notifications n ON n.id = d.notification_id WHERE n.message_id = %s",
        (message_id,),
    ).fetchone()
    assert row is not None, message_id
    return row[0]


def _events(conn: psycopg.Connection, message_id: str) -> list[tuple[str, Any]]:
    conn.commit()
    return conn.execute(
        "SELECT e.kind, e.detail FROM outbox.events e "
        "JOIN outbox.notifications n ON n.id = e.notification_id "
        "WHERE n.message_id = %s AND e.delivery_id IS NOT NULL ORDER BY e.id",
        (message_id,),
    ).fetchall()


def _finished(conn: psycopg.Connection, message_id: str) -> bool:
    return _delivery(conn, message_id)["status"] not in ("pending", "processing")


# -- F1, end to end: a real worker, the Twilio adapter, the sandbox ---------------------------


@pytest.fixture
def sms(conn: psycopg.Connection) -> psycopg.Connection:
    factories.templates(conn, "ft", channels=("sms",))
    conn.commit()
    return conn


def _cancel_while_at_the_sandbox(
    conn: psycopg.Connection, db_url: str, sandbox: dict[str, Any], faults: Any, script: list[str]
) -> Any:
    """Enqueue cr-1 to the sandbox's Twilio, answering ``script`` after 2 s each; cancel it
    while its first request is at the sandbox; wait until it is finished. The cancel's result."""
    faults.set_faults(
        {"providers": {"twilio": {"latency_ms": 2000, "script": script, "retry_after_s": 1}}}
    )
    worker = e2e.make_worker(db_url, sandbox, "cancel-e2e")
    with e2e.running(worker):
        outbox.enqueue(conn, "cr-1", address=PHONE, template="ft", data={"order": 1})
        conn.commit()
        e2e.wait_until(lambda: faults.requests("twilio"), WAIT_S, "the attempt at the sandbox")
        result = outbox.cancel(conn, "cr-1")
        conn.commit()
        e2e.wait_until(lambda: _finished(conn, "cr-1"), WAIT_S, "cr-1 to finish")
    return result


def test_f1_a_cancel_during_the_attempt_in_flight_means_no_retry(sms, db_url, sandbox, faults):
    """F1: the attempt in flight is rate limited; before the fix its retry was sent after
    the application had cancelled (events ... retry, processing, sent; the sandbox saw
    rate_limited then ok). Now the result ends it cancelled, and the sandbox saw one request."""
    result = _cancel_while_at_the_sandbox(sms, db_url, sandbox, faults, ["rate_limited"])

    assert [r["answer"] for r in faults.requests("twilio")] == ["rate_limited"]
    assert faults.requests("vonage") == []
    row = _delivery(sms, "cr-1")
    assert row["status"] == "cancelled"
    assert row["attempts"] == 1
    assert row["last_error"].startswith("cancelled by the application; the attempt in flight: ")
    assert "twilio" in row["last_error"]
    events = _events(sms, "cr-1")
    assert [kind for kind, _ in events] == [
        "created",
        "processing",
        "cancel_requested",
        "cancelled",
    ]
    cancelled = events[-1][1]
    assert cancelled["reason"] == "cancelled by the application"
    assert cancelled["instead_of"] == "retry" and "retry_in_seconds" not in cancelled
    # What the caller was told: nothing pending to cancel, one delivery in flight.
    assert result == 1
    assert (result.cancelled, result.in_flight) == (0, 1)


def test_a_cancel_too_late_for_a_successful_attempt_leaves_it_sent_and_says_so(
    sms, db_url, sandbox, faults
):
    result = _cancel_while_at_the_sandbox(sms, db_url, sandbox, faults, ["ok"])

    assert [r["answer"] for r in faults.requests("twilio")] == ["ok"]
    assert _delivery(sms, "cr-1")["status"] == "sent"
    events = _events(sms, "cr-1")
    assert [kind for kind, _ in events] == ["created", "processing", "cancel_requested", "sent"]
    assert events[-1][1]["cancel"] == "too late: the provider had accepted this attempt"
    assert (result.cancelled, result.in_flight) == (0, 1)


# -- the other races, with an in-process worker ----------------------------------------------


@pytest.fixture
def world(conn: psycopg.Connection) -> psycopg.Connection:
    """user-7 with email, phone and devices; templates for every channel (committed)."""
    return factories.seven(conn)


def _enqueue_email(conn: psycopg.Connection, message_id: str) -> None:
    factories.enqueue_committed(conn, message_id, channels=["email"])


def _cancel(db_url: str, message_id: str, reason: str = "order refunded") -> Any:
    with psycopg.connect(db_url) as c:
        return outbox.cancel(c, message_id, reason)


async def _until(predicate: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome.retry("503 from the provider", retry_after=0.0),
        Outcome.unknown("timed out after sending"),
        Outcome.permanent("invalid address"),
    ],
    ids=["retry", "unknown", "permanent"],
)
def test_whatever_the_attempt_in_flight_gets_but_sent_ends_it_cancelled(world, db_url, outcome):
    _enqueue_email(world, "m-1")
    provider = ScriptedProvider(script={"seven@example.com": [outcome]})
    worker = make_worker(db_url, provider, backoff_base_seconds=0.01)

    async def go() -> Any:
        provider.gate = asyncio.Event()
        one_round = asyncio.create_task(worker.run_once())
        await _until(lambda: bool(provider.calls), "the provider call")
        result = await asyncio.to_thread(_cancel, db_url, "m-1")
        provider.gate.set()
        await one_round
        # Nothing is left to claim: no retry.
        assert await worker.run_once() == 0
        await worker.close()
        return result

    result = asyncio.run(go())
    assert (result.cancelled, result.in_flight) == (0, 1)
    assert len(provider.calls) == 1
    row = _delivery(world, "m-1")
    assert row["status"] == "cancelled"
    assert row["last_error"] == f"order refunded; the attempt in flight: scripted: {outcome.reason}"
    assert worker.stats["cancelled"] == 1


def test_a_cancel_between_claim_and_send_stops_the_send(world, db_url):
    """The worker hears the cancel (NOTIFY outbox_cancel) and does not call the provider."""
    _enqueue_email(world, "m-1")
    provider = ScriptedProvider()
    gate = HeldGate()
    worker = make_worker(db_url, provider)
    worker.gate = gate

    async def go() -> Any:
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            run = asyncio.create_task(worker.run(stop))
            await asyncio.wait_for(gate.entered.wait(), WAIT_S)  # claimed, not sent yet
            await _until(lambda: asyncio.to_thread(_listening, db_url), "the worker to LISTEN")
            result = await asyncio.to_thread(_cancel, db_url, "m-1")
            await _until(
                lambda: any(e["event"] == "delivery.cancel_requested" for e in logs),
                "the worker to hear the cancel",
            )
            gate.release.set()
            await _until(lambda: asyncio.to_thread(_finished, world, "m-1"), "m-1 to be recorded")
            stop.set()
            await run
        return result

    result = asyncio.run(go())
    assert (result.cancelled, result.in_flight) == (0, 1)
    assert provider.calls == []
    row = _delivery(world, "m-1")
    assert row["status"] == "cancelled"
    assert row["attempts"] == 0  # refunded: no attempt reached a provider
    assert (
        row["last_error"]
        == "order refunded; the attempt in flight: cancel requested before sending"
    )
    # Claimed but never started: no 'processing' event.
    assert [kind for kind, _ in _events(world, "m-1")] == [
        "created",
        "cancel_requested",
        "cancelled",
    ]


def _listening(db_url: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'outbox-worker listen %%' AND query = 'LISTEN outbox_cancel'"
        ).fetchone()
        return bool(row and row[0])


class HeldGate:
    """A gate that holds each claimed batch until ``release`` is set (and limits nothing)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def admit(self, conn: Any, rows: Sequence[ClaimedDelivery]) -> dict[int, Any]:
        self.entered.set()
        await self.release.wait()
        return {}


def test_lease_recovery_of_a_delivery_whose_cancel_was_requested_ends_it_cancelled(world, db_url):
    """Its worker hangs in the provider call past the lease; another worker's recovery ends
    it cancelled (in doubt), not pending; the hung worker's late result is dropped."""
    _enqueue_email(world, "m-1")
    hung = ScriptedProvider("hung")
    other = ScriptedProvider("other")
    a = make_worker(db_url, hung, worker_id="worker-a", lease_seconds=0.5)
    b = make_worker(db_url, other, worker_id="worker-b")

    async def go() -> tuple[Any, Recovered]:
        hung.gate = asyncio.Event()
        a_round = asyncio.create_task(a.run_once())
        await _until(lambda: bool(hung.calls), "A's provider call")
        result = await asyncio.to_thread(_cancel, db_url, "m-1")
        await asyncio.sleep(0.7)  # A's lease expires while it is stuck in the provider call
        recovered = await b.recover_leases()
        assert await b.run_once() == 0  # nothing to claim
        hung.gate.set()
        await a_round
        await a.close()
        await b.close()
        return result, recovered

    result, recovered = asyncio.run(go())
    assert (result.cancelled, result.in_flight) == (0, 1)
    assert recovered == Recovered(recovered=0, dead=0, cancelled=1)
    assert other.calls == [] and len(hung.calls) == 1
    assert a.stats["fenced"] == 1
    row = _delivery(world, "m-1")
    assert (row["status"], row["in_doubt"]) == ("cancelled", 1)
    assert row["last_error"] == "order refunded; lease of worker-a expired at attempt 1"
    assert [kind for kind, _ in _events(world, "m-1")] == [
        "created",
        "processing",
        "cancel_requested",
        "cancelled",
    ]


def test_a_shutdown_that_releases_a_delivery_whose_cancel_was_requested_ends_it_cancelled(
    world, db_url
):
    _enqueue_email(world, "m-1")
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider, shutdown_grace_seconds=0.2)

    async def go() -> Any:
        provider.gate = asyncio.Event()  # never opened: the send hangs
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        await _until(lambda: bool(provider.calls), "the provider call")
        result = await asyncio.to_thread(_cancel, db_url, "m-1")
        stop.set()
        await run
        return result

    result = asyncio.run(go())
    assert (result.cancelled, result.in_flight) == (0, 1)
    row = _delivery(world, "m-1")
    assert (row["status"], row["attempts"], row["in_doubt"]) == ("cancelled", 1, 1)
    assert row["last_error"] == "order refunded"
    kinds = [kind for kind, _ in _events(world, "m-1")]
    assert kinds == ["created", "processing", "cancel_requested", "cancelled"]


# -- the database's side: counts, the invariant, the DLQ ---------------------------------------


def test_cancel_counts_pending_deliveries_cancelled_now_and_those_in_flight(world, db_url):
    """Pending ones are cancelled at once; a repeat counts nothing new."""
    factories.enqueue_committed(world, "m-1", channels=["email", "sms"])
    world.execute(
        "UPDATE outbox.deliveries SET status = 'processing', attempts = 1, lease_owner = 'w', "
        "lease_expires_at = now() + interval '1 minute' WHERE channel = 'email'"
    )
    world.commit()
    first = outbox.cancel(world, "m-1")
    assert first == 2 and (first.cancelled, first.in_flight) == (1, 1)
    assert isinstance(first, int) and repr(first) == "Cancellation(cancelled=1, in_flight=1)"
    again = outbox.cancel(world, "m-1")
    assert again == 0 and (again.cancelled, again.in_flight) == (0, 0)
    rows = world.execute(
        "SELECT channel::text, status::text, cancel_reason FROM outbox.deliveries ORDER BY channel"
    ).fetchall()
    assert rows == [
        ("email", "processing", "cancelled by the application"),
        ("sms", "cancelled", None),
    ]
    assert world.execute("SELECT outbox.cancel('m-1')").fetchone()[0] == 0
    assert world.execute("SELECT * FROM outbox.cancel_detailed('m-1')").fetchone() == (0, 0)


def test_a_delivery_whose_cancel_was_requested_can_never_be_pending(world):
    """So the claim never picks it up, whatever path would bring it back."""
    _enqueue_email(world, "m-1")
    world.execute(
        "UPDATE outbox.deliveries SET status = 'processing', attempts = 1, lease_owner = 'w', "
        "lease_expires_at = now() + interval '1 minute'"
    )
    outbox.cancel(world, "m-1")
    with pytest.raises(psycopg.errors.CheckViolation, match="cancel_requested_not_pending"):
        world.execute(
            "UPDATE outbox.deliveries SET status = 'pending', lease_owner = NULL, "
            "lease_expires_at = NULL"
        )


def test_dlq_requeue_does_not_revive_a_delivery_the_application_cancelled(world):
    """Sent although its cancel came too late, then dead (a bounce): requeue leaves it dead."""
    _enqueue_email(world, "cancelled-then-bounced")
    _enqueue_email(world, "bounced")
    world.execute(
        "UPDATE outbox.deliveries SET status = 'processing', attempts = 1, lease_owner = 'w', "
        "lease_expires_at = now() + interval '1 minute'"
    )
    outbox.cancel(world, "cancelled-then-bounced")
    world.execute(
        "UPDATE outbox.deliveries SET status = 'dead', lease_owner = NULL, "
        "lease_expires_at = NULL, sent_at = now(), finished_at = now(), "
        "last_error = 'sendgrid: bounce'"
    )
    assert dlq.requeue(world, actor="cli:test", everything=True) == 1
    assert _delivery(world, "cancelled-then-bounced")["status"] == "dead"
    assert _delivery(world, "bounced")["status"] == "pending"
