"""Metrics and delivery logs of a real worker run: scraped over HTTP, as Prometheus does."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

import outbox
from outbox import metrics
from outbox.providers.base import Outcome
from outbox.settings import CHANNELS
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker


@pytest.fixture
def world(conn):
    factories.recipient(conn, "user-7", email="seven@example.com", phone="+14155550107")
    factories.device(conn, "user-7", "apns", "apns-token-0001")
    factories.templates(conn)
    conn.commit()
    return conn


@pytest.fixture(scope="module")
def endpoint():
    """The in-process /metrics endpoint on a free loopback port."""
    server = metrics.serve(0, addr="127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def _enqueue(conn, message_id: str, **kw) -> None:
    outbox.enqueue(
        conn, message_id, recipient="user-7", template="order_confirmed", data={"order": 1}, **kw
    )
    conn.commit()


def _unfinished(db_url: str) -> int:
    with psycopg.connect(db_url) as c:
        return c.execute(
            "SELECT count(*) FROM outbox.deliveries WHERE status IN ('pending', 'processing') "
            "AND next_attempt_at <= now()"
        ).fetchone()[0]


def test_a_worker_run_moves_counters_histograms_and_gauges(world, db_url, endpoint):
    for i in range(5):
        _enqueue(world, f"m-{i}")
    _enqueue(world, "scheduled", send_at=datetime.now(UTC) + timedelta(days=30))
    provider = ScriptedProvider(
        script={
            "+14155550107": [Outcome.retry("503")] * 5,  # sms: retried (then waits 10 s+)
            "apns-token-0001": [Outcome.permanent("bad payload")] * 5,  # push: dead
        }
    )
    worker = make_worker(db_url, provider, recover_interval_seconds=0.1)
    worker.gauges = metrics.QueueGauges(interval_seconds=0.1)

    async def refresh_only() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            await worker.gauges.run_once(aconn)

    asyncio.run(refresh_only())
    before = scrape(endpoint)
    assert total(before, "outbox_queue_due", channel="email") == 5
    assert (
        total(before, "outbox_queue_depth", channel="email", status="pending") == 6
    )  # + the scheduled one
    assert total(before, "outbox_queue_depth", channel="sms", status="processing") == 0
    assert total(before, "outbox_oldest_pending_age_seconds", channel="email") >= 0

    async def run_until_drained() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if _unfinished(db_url) == 0 and worker.stats["sent"] >= 5:
                break
        await asyncio.sleep(0.3)  # one more gauge refresh after the last record
        stop.set()
        await task

    asyncio.run(run_until_drained())
    after = scrape(endpoint)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert (
        delta("outbox_deliveries_total", channel="email", provider="scripted", outcome="sent") == 5
    )
    assert (
        delta("outbox_deliveries_total", channel="sms", provider="scripted", outcome="retried") == 5
    )
    assert (
        delta("outbox_deliveries_total", channel="push", provider="scripted", outcome="dead") == 5
    )
    assert delta("outbox_provider_call_seconds_count", provider="scripted") == 15
    assert delta("outbox_provider_call_seconds_count", provider="scripted", outcome="retry") == 5
    assert delta("outbox_delivery_latency_seconds_count", channel="email") == 5
    assert (
        delta("outbox_delivery_latency_seconds_count", channel="push") == 0
    )  # only sends have latency
    assert 0 < delta("outbox_delivery_latency_seconds_sum", channel="email") < 60
    # The gauges were refreshed by the worker's housekeeping, not per delivery.
    assert total(after, "outbox_queue_due", channel="email") == 0
    assert (
        total(after, "outbox_queue_depth", channel="sms", status="pending") == 6
    )  # retries wait + scheduled
    assert total(after, "outbox_queue_due", channel="sms") == 0
    assert total(after, "outbox_queue_gauges_updated_timestamp_seconds") > time.time() - 10


def test_label_values_are_bounded(world, db_url, endpoint):
    _enqueue(world, "m-1")
    _drain(make_worker(db_url, ScriptedProvider()))
    samples = scrape(endpoint)
    allowed = {
        "channel": set(CHANNELS),
        "outcome": set(metrics.OUTCOMES)
        | {"other", "sent", "retry", "permanent", "dead_destination", "config", "unknown", "error"},
        "status": {"pending", "processing"},
    }
    for (name, labels), _ in samples.items():
        if not name.startswith("outbox_"):
            continue
        for key, value in labels:
            if key in allowed:
                assert value in allowed[key], (name, key, value)
            else:
                # provider: configured names only (here the scripted one) or the pseudo providers.
                assert key in ("provider", "le"), (name, key)


def _drain(worker) -> None:
    async def go():
        try:
            for _ in range(20):
                if await worker.run_once() == 0:
                    return
        finally:
            await worker.close()

    asyncio.run(go())


def test_fenced_results_are_counted(world, db_url, endpoint):
    """A result whose lease was taken over is dropped, and counted as fenced."""
    _enqueue(world, "fenced", channels=["email"])
    provider = ScriptedProvider()
    provider.gate = asyncio.Event()
    worker = make_worker(db_url, provider)
    before = scrape(endpoint)

    async def go():
        run = asyncio.create_task(worker.run_once())
        while not provider.calls:
            await asyncio.sleep(0.01)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            # Another worker recovered the lease meanwhile.
            await aconn.execute("UPDATE outbox.deliveries SET lease_owner = 'someone-else'")
        provider.gate.set()
        await run
        await worker.close()

    asyncio.run(go())
    after = scrape(endpoint)
    assert (
        total(after, "outbox_deliveries_total", channel="email", outcome="fenced")
        - total(before, "outbox_deliveries_total", channel="email", outcome="fenced")
    ) == 1
    assert (
        total(after, "outbox_deliveries_total", channel="email", outcome="sent")
        - total(before, "outbox_deliveries_total", channel="email", outcome="sent")
    ) == 0


def test_breaker_state_gauge(endpoint):
    metrics.set_breaker_state("twilio", "open")
    metrics.set_breaker_state("sendgrid", "half-open")
    metrics.set_breaker_state("vonage", 0)
    samples = scrape(endpoint)
    assert total(samples, "outbox_provider_breaker_state", provider="twilio") == 2
    assert total(samples, "outbox_provider_breaker_state", provider="sendgrid") == 1
    assert total(samples, "outbox_provider_breaker_state", provider="vonage") == 0
    with pytest.raises(ValueError, match="'ajar'"):
        metrics.set_breaker_state("twilio", "ajar")
    with pytest.raises(ValueError, match="7"):
        metrics.set_breaker_state("twilio", 7)


def test_delivery_log_lines_carry_the_ids(world, db_url, monkeypatch):
    """Every delivery.* line names message id, delivery id, channel, provider and attempt."""
    import outbox.workers.worker

    _enqueue(world, "logged")
    _enqueue(world, "expired-at-claim", expires_at=datetime.now(UTC) + timedelta(days=30))
    world.execute("""UPDATE outbox.deliveries d SET expires_at = now() - interval '1 second'
                     FROM outbox.notifications n WHERE n.id = d.notification_id
                     AND n.message_id = 'expired-at-claim'""")
    world.commit()
    provider = ScriptedProvider(
        script={
            "+14155550107": [Outcome.retry("503")],
            "apns-token-0001": [Outcome.permanent("bad")],
        }
    )
    with structlog.testing.capture_logs() as logs:
        # A fresh proxy: the module's logger may have been cached by an earlier configure().
        monkeypatch.setattr(outbox.workers.worker, "log", structlog.get_logger("outbox.worker"))
        _drain(make_worker(db_url, provider))
    lines = [e for e in logs if e["event"].startswith("delivery.")]
    assert {e["event"] for e in lines} >= {
        "delivery.sent",
        "delivery.retry",
        "delivery.dead",
        "delivery.expired",
    }
    for entry in lines:
        missing = {"message_id", "delivery_id", "channel", "provider", "attempt"} - set(entry)
        assert not missing, (entry["event"], missing)
    sent = next(e for e in lines if e["event"] == "delivery.sent")
    assert (sent["message_id"], sent["channel"], sent["provider"], sent["attempt"]) == (
        "logged",
        "email",
        "scripted",
        1,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_worker_process_serves_metrics_on_its_port(world, db_url):
    """`outbox worker` with OUTBOX_METRICS_PORT: the endpoint Prometheus scrapes."""
    port = _free_port()
    env = os.environ | {
        "OUTBOX_DATABASE_URL": db_url,
        "OUTBOX_METRICS_PORT": str(port),
        "OUTBOX_METRICS_REFRESH_SECONDS": "0.2",
        "OUTBOX_RECOVER_INTERVAL_SECONDS": "0.2",
        "OUTBOX_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(url)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the worker never served /metrics"
                time.sleep(0.1)
        _enqueue(world, "via-process")
        while True:
            samples = scrape(url)
            if total(samples, "outbox_deliveries_total", outcome="sent") >= 3:
                break
            assert time.monotonic() < deadline, "no sends counted"
            time.sleep(0.1)
        assert (
            total(
                samples,
                "outbox_deliveries_total",
                provider="console",
                channel="sms",
                outcome="sent",
            )
            == 1
        )
        while total(scrape(url), "outbox_queue_gauges_updated_timestamp_seconds") == 0:
            assert time.monotonic() < deadline, "gauges never refreshed"
            time.sleep(0.1)
        assert "process_cpu_seconds_total" in {
            n for n, _ in scrape(url)
        }  # the default collectors too
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
