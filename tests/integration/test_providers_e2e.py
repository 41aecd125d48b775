"""The worker and the provider sandbox end to end, over real sockets.

The sandbox runs as its own process (``outbox sandbox --port 0 --tls-port 0``),
as it does for the demo and the benchmarks; the worker runs in a thread of the
test process with the real adapters built from the sandbox's ``outbox.env``.
Faults are changed at run time through the sandbox's control API.

* failover: SendGrid answering 503s moves email to Mailchimp within the
  breaker's threshold; a probe while it still fails reopens it for longer;
  once the sandbox recovers, traffic returns to SendGrid after the cool-down;
* dead tokens: APNs and FCM report them, the devices are deactivated, the next
  notification does not target them;
* 2,000 mixed deliveries with 20% transient faults all end sent; injected
  permanent faults (dead lists, specific error codes) end dead with the right
  reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from dotenv import dotenv_values

import outbox
from outbox.providers.registry import build_providers
from outbox.sandbox import SandboxClient
from outbox.settings import Settings
from outbox.workers.config import WorkerConfig
from outbox.workers.worker import Worker
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
ROUTES = {"email": ["sendgrid", "mailchimp"], "sms": ["twilio", "vonage"], "push": ["apns", "fcm"]}
# Generous: the machine is shared with other test runs.
WAIT_S = 60.0


# -- the sandbox, in its own process ------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``outbox sandbox`` on free ports: its control client and the settings pointing at it."""
    state_dir = tmp_path_factory.mktemp("sandbox")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "outbox",
            "sandbox",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--state-dir",
            str(state_dir),
            "--faults",
            json.dumps({"seed": 4, "hang_s": 5}),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = _started(proc, state_dir)
        settings = {
            k[len("OUTBOX_") :].lower(): v
            for k, v in dotenv_values(state_dir / "outbox.env").items()
        }
        yield {"client": client, "settings": settings}
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _started(proc: subprocess.Popen, state_dir: Path) -> SandboxClient:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"outbox sandbox exited with {proc.returncode}")
        info = state_dir / "sandbox.json"
        if info.exists() and (state_dir / "outbox.env").exists():
            client = SandboxClient(json.loads(info.read_text())["http_url"])
            if client.health():
                return client
            client.close()
        time.sleep(0.05)
    raise RuntimeError("outbox sandbox did not answer within 30 s")


@pytest.fixture
def faults(sandbox: dict[str, Any]) -> Iterator[SandboxClient]:
    """The sandbox's control client, records and faults reset before and after each test."""
    client: SandboxClient = sandbox["client"]
    client.reset()
    yield client
    client.reset()


# -- a worker in a thread -------------------------------------------------------------------------


def make_worker(db_url: str, sandbox: dict[str, Any], worker_id: str, **config: Any) -> Worker:
    """A worker whose adapters are the real ones, pointed at the sandbox."""
    settings = Settings(
        _env_file=None,
        **sandbox["settings"],
        provider_timeout_seconds=3.0,
        providers_email=ROUTES["email"],
        providers_sms=ROUTES["sms"],
        providers_push=ROUTES["push"],
    )
    config = {
        "poll_interval_seconds": 0.1,
        "backoff_base_seconds": 0.05,
        "backoff_cap_seconds": 0.3,
        "lease_seconds": 30.0,
        "breaker_refresh_seconds": 0.2,
        **config,
    }
    return Worker(
        db_url,
        build_providers(settings),
        ROUTES,
        WorkerConfig(**config),
        worker_id=worker_id,
    )


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` in a thread with its own event loop; stop it gracefully on exit."""
    started = threading.Event()
    loop_box: dict[str, Any] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # As the worker process does: SendGrid's SDK is synchronous and runs in threads.
        loop.set_default_executor(ThreadPoolExecutor(worker.config.concurrency))
        stop = asyncio.Event()
        loop_box.update(loop=loop, stop=stop)
        started.set()
        try:
            await worker.run(stop)
        finally:
            await worker.router.aclose()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=target, name=f"worker-{worker.id}", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield worker
    finally:
        if "loop" in loop_box:
            loop_box["loop"].call_soon_threadsafe(loop_box["stop"].set)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop"
    if failure:
        raise failure[0]


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def statuses(conn: psycopg.Connection) -> Counter[str]:
    conn.commit()
    return Counter(
        dict(
            conn.execute(
                "SELECT status::text, count(*) FROM outbox.deliveries GROUP BY 1"
            ).fetchall()
        )
    )


def unfinished(conn: psycopg.Connection) -> int:
    s = statuses(conn)
    return s["pending"] + s["processing"]


def _answers(client: SandboxClient, provider: str) -> list[str]:
    return [r["answer"] for r in client.requests(provider)]


# -- failover ------------------------------------------------------------------------------------


THRESHOLD = 3
CONCURRENCY = 4


def test_sendgrid_503s_move_email_to_mailchimp_and_it_returns_after_recovery(
    conn, db_url, sandbox, faults
):
    for i in range(40):
        factories.recipient(conn, f"user-{i}", email=f"user{i}@example.com")
    factories.templates(conn, channels=("email",))
    conn.commit()
    faults.set_faults({"providers": {"sendgrid": {"always": "503"}}})
    worker = make_worker(
        db_url,
        sandbox,
        "e2e-failover",
        concurrency=CONCURRENCY,
        batch_size=CONCURRENCY,
        breaker_failure_threshold=THRESHOLD,
        breaker_cooldown_seconds=0.6,
        breaker_cooldown_cap_seconds=1.2,
        breaker_probe_seconds=5.0,
    )
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            outbox.enqueue(
                conn,
                f"m-{sent}",
                recipient=f"user-{sent % 40}",
                template="order_confirmed",
                data={"order": sent},
                channels=["email"],
            )
            sent += 1
        conn.commit()

    def breaker() -> tuple[str, int, int] | None:
        conn.commit()
        return conn.execute(
            "SELECT state::text, failures, trips FROM outbox.provider_breakers "
            "WHERE provider = 'sendgrid'"
        ).fetchone()

    with structlog.testing.capture_logs() as logs, running(worker):
        # 1. SendGrid fails: after THRESHOLD consecutive failures (plus what was already in
        #    flight) email goes to Mailchimp; every message, retried ones included, is sent.
        send(12)
        wait_until(lambda: unfinished(conn) == 0, what="the first 12 emails")
        state, failures, _ = breaker()
        assert state == "open" and failures >= THRESHOLD
        # The threshold, plus what was in flight or claimed before the failures were recorded.
        first_failures = len(faults.requests("sendgrid"))
        assert THRESHOLD <= first_failures <= THRESHOLD + 2 * CONCURRENCY
        assert set(_answers(faults, "sendgrid")) == {"503"}

        # 2. Still failing: traffic keeps flowing (to Mailchimp); after each cool-down ONE
        #    probe goes to SendGrid, fails, and the breaker reopens for longer.
        t_end = time.monotonic() + 2.2
        while time.monotonic() < t_end:
            send(1)
            time.sleep(0.1)
        wait_until(lambda: unfinished(conn) == 0, what="the trickle while SendGrid fails")
        # Each failed probe reopened it: one SendGrid request per extra trip. (Waited for,
        # as the breaker is updated just after the delivery is recorded.)
        wait_until(
            lambda: len(faults.requests("sendgrid")) - first_failures == breaker()[2] - 1,
            timeout=5,
            what="one probe request per reopening",
        )
        state, _, trips = breaker()
        assert state == "open" and trips >= 2

        # 3. SendGrid recovers: within a cool-down a probe succeeds, the breaker closes
        #    and email goes back to SendGrid.
        faults.set_faults({"providers": {"sendgrid": {}}})

        def back_on_sendgrid() -> bool:
            send(1)
            time.sleep(0.1)
            return "ok" in _answers(faults, "sendgrid")

        wait_until(back_on_sendgrid, timeout=15, what="a successful probe to SendGrid")
        wait_until(lambda: breaker()[0] == "closed", timeout=15, what="the breaker to close")
        before = len(faults.requests("mailchimp"))
        send(8)
        wait_until(lambda: unfinished(conn) == 0, what="the last 8 emails")
        assert len(faults.requests("mailchimp")) == before  # none of them went to Mailchimp

    conn.commit()
    by_provider = dict(
        conn.execute(
            "SELECT provider, count(*) FROM outbox.deliveries WHERE status = 'sent' GROUP BY 1"
        ).fetchall()
    )
    assert statuses(conn) == Counter({"sent": sent})
    assert by_provider["mailchimp"] >= 12 and by_provider["sendgrid"] >= 9
    events = [e["event"] for e in logs if e["event"].startswith("provider.breaker")]
    assert events.count("provider.breaker_opened") == trips  # the first opening + failed probes
    assert events[-3:] == [
        "provider.breaker_half_open",
        "provider.breaker_probe",
        "provider.breaker_closed",
    ]
    assert breaker() == ("closed", 0, 0)


# -- dead tokens --------------------------------------------------------------------------------


DEAD_APNS = "dead" + "0" * 60
LIVE_APNS = "a11ce" + "0" * 59
DEAD_FCM = "fcm-dead-registration-token-0001"
LIVE_FCM = "fcm-live-registration-token-0002"


def test_dead_tokens_from_apns_and_fcm_deactivate_the_devices(conn, db_url, sandbox, faults):
    factories.recipient(conn, "user-1")
    for token, platform in (
        (DEAD_APNS, "apns"),
        (LIVE_APNS, "apns"),
        (DEAD_FCM, "fcm"),
        (LIVE_FCM, "fcm"),
    ):
        factories.device(conn, "user-1", platform, token)
    factories.templates(conn, channels=("push",))
    conn.commit()
    faults.set_faults({"providers": {"apns": {"dead": [DEAD_APNS]}, "fcm": {"dead": [DEAD_FCM]}}})

    def deliveries(message_id: str) -> dict[str, tuple[str, str | None]]:
        conn.commit()
        return {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                """
            SELECT d.destination, d.status::text, d.last_error FROM outbox.deliveries d
            JOIN outbox.notifications n ON n.id = d.notification_id WHERE n.message_id = %s""",
                [message_id],
            )
        }

    with running(make_worker(db_url, sandbox, "e2e-tokens", concurrency=8)):
        outbox.enqueue(
            conn, "first", recipient="user-1", template="order_confirmed", data={"order": 1}
        )
        conn.commit()
        wait_until(lambda: unfinished(conn) == 0, what="the first notification")
        first = deliveries("first")
        assert first[LIVE_APNS][0] == first[LIVE_FCM][0] == "sent"
        assert first[DEAD_APNS] == ("dead", "apns: APNs 410 Unregistered")
        assert first[DEAD_FCM][0] == "dead" and first[DEAD_FCM][1].startswith(
            "fcm: FCM UnregisteredError"
        )

        # The recorder retires dead tokens just after it commits the results
        # (workers/recorder.py, step 2): wait for that second transaction.
        expected = {DEAD_APNS: False, LIVE_APNS: True, DEAD_FCM: False, LIVE_FCM: True}

        def devices() -> dict[str, bool]:
            conn.commit()
            return dict(conn.execute("SELECT token, active FROM outbox.devices").fetchall())

        wait_until(lambda: devices() == expected, what="the dead tokens deactivated")

        outbox.enqueue(
            conn, "second", recipient="user-1", template="order_confirmed", data={"order": 2}
        )
        conn.commit()
        wait_until(lambda: unfinished(conn) == 0, what="the second notification")
        assert deliveries("second") == {LIVE_APNS: ("sent", None), LIVE_FCM: ("sent", None)}

    # The dead tokens were each tried once, by the first notification only.
    assert [r["destination"] for r in faults.requests("apns")].count(DEAD_APNS) == 1
    assert [r["destination"] for r in faults.requests("fcm")].count(DEAD_FCM) == 1


# -- 2,000 mixed deliveries ---------------------------------------------------------------


RECIPIENTS = 500  # x (email, sms, APNs device, FCM device) = 2,000 deliveries
TRANSIENT = {
    # 20% of requests get a transient answer. Named answers rather than the generic
    # "rate_limited", whose Retry-After (a whole second, rounded up) would only slow the test;
    # and no 5xx for FCM, which its SDK retries by itself, hiding the fault from us.
    "sendgrid": ["503", "500"],
    "mailchimp": ["GeneralError"],
    "twilio": ["20500", "20429"],
    "vonage": ["5", "1"],
    "apns": ["ServiceUnavailable", "TooManyRequests"],
    "fcm": ["QUOTA_EXCEEDED"],
}


@pytest.mark.slow
def test_two_thousand_mixed_deliveries_with_faults(conn, db_url, sandbox, faults):
    # Attempts enough that 20% faults cannot exhaust them (0.2^25).
    conn.execute("UPDATE outbox.channel_config SET max_attempts = 25")
    dead_phones, dead_apns, dead_fcm = set(), set(), set()
    for i in range(RECIPIENTS):
        phone = f"+1415666{i:04d}"
        factories.recipient(conn, f"r-{i}", email=f"r{i}@example.com", phone=phone)
        factories.device(conn, f"r-{i}", "apns", f"{i:064x}")
        factories.device(conn, f"r-{i}", "fcm", f"fcm-registration-token-{i:06d}")
        if i % 50 == 7:
            dead_phones.add(phone)
        if i % 50 == 13:
            dead_apns.add(f"{i:064x}")
        if i % 50 == 21:
            dead_fcm.add(f"fcm-registration-token-{i:06d}")
    factories.templates(conn)
    conn.commit()
    # An invalid number is invalid for both SMS providers (traffic may fail over to Vonage).
    faults.set_faults(
        {
            "seed": 11,
            "providers": {
                **{
                    name: {"error_rate": 0.2, "errors": errors}
                    for name, errors in TRANSIENT.items()
                },
                "twilio": {
                    "error_rate": 0.2,
                    "errors": TRANSIENT["twilio"],
                    "dead": sorted(dead_phones),
                },
                "vonage": {
                    "error_rate": 0.2,
                    "errors": TRANSIENT["vonage"],
                    "dead": sorted(dead_phones),
                },
                "apns": {"error_rate": 0.2, "errors": TRANSIENT["apns"], "dead": sorted(dead_apns)},
                "fcm": {"error_rate": 0.2, "errors": TRANSIENT["fcm"], "dead": sorted(dead_fcm)},
            },
        }
    )
    worker = make_worker(
        db_url,
        sandbox,
        "e2e-mixed",
        concurrency=64,
        batch_size=100,
        breaker_cooldown_seconds=0.5,
        breaker_cooldown_cap_seconds=1.0,
    )

    started = time.monotonic()
    with running(worker):
        outbox.enqueue_many(
            conn,
            [
                {
                    "message_id": f"n-{i}",
                    "recipient": f"r-{i}",
                    "template": "order_confirmed",
                    "data": {"order": i},
                }
                for i in range(RECIPIENTS)
            ],
        )
        conn.commit()
        wait_until(lambda: unfinished(conn) == 0, what="2,000 deliveries to finish")
        elapsed = time.monotonic() - started

        # Permanent answers by error code: one message, each provider scripted to refuse it.
        factories.recipient(conn, "r-x", email="rx@example.com", phone="+14156669999")
        factories.device(conn, "r-x", "apns", "f" * 64)
        factories.device(conn, "r-x", "fcm", "fcm-registration-token-x")
        conn.commit()
        faults.set_faults(
            {
                "providers": {
                    "sendgrid": {"script": ["400"]},
                    "twilio": {"script": ["21617"]},
                    "apns": {"script": ["PayloadTooLarge"]},
                    "fcm": {"script": ["INVALID_ARGUMENT"]},
                }
            }
        )
        outbox.enqueue(conn, "n-x", recipient="r-x", template="order_confirmed", data={"order": 0})
        conn.commit()
        wait_until(lambda: unfinished(conn) == 0, what="the scripted permanent failures")

    rows = conn.execute("""
        SELECT n.message_id, d.channel::text, d.destination, d.status::text, d.last_error,
               d.attempts
        FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id
    """).fetchall()
    main = [r for r in rows if r[0] != "n-x"]
    assert len(main) == 4 * RECIPIENTS
    dead = {r[2]: r[4] for r in main if r[3] == "dead"}
    assert {r[3] for r in main if r[2] not in dead} == {"sent"}
    assert set(dead) == dead_phones | dead_apns | dead_fcm
    for phone in dead_phones:
        assert dead[phone].startswith(("twilio: Twilio 21211", "vonage: Vonage status 6")), dead[
            phone
        ]
    for token in dead_apns:
        assert dead[token] == "apns: APNs 410 Unregistered"
    for token in dead_fcm:
        assert dead[token].startswith("fcm: FCM UnregisteredError"), dead[token]
    # The faults really happened (about 20% of requests), and were retried.
    counts = faults.counts()
    total = sum(c["total"] for c in counts.values())
    transient = sum(
        n
        for c in counts.values()
        for answer, n in c["answers"].items()
        if answer not in ("ok", "dead")
    )
    assert total > 4 * RECIPIENTS and 0.12 < transient / total < 0.28, counts
    assert elapsed < 120, f"2,000 deliveries took {elapsed:.1f}s"

    scripted = {r[2]: (r[3], r[4] or "") for r in rows if r[0] == "n-x"}
    assert {status for status, _ in scripted.values()} == {"dead"}
    assert scripted["rx@example.com"][1].startswith("sendgrid: SendGrid 400")
    assert scripted["+14156669999"][1].startswith("twilio: Twilio 21617")
    assert scripted["f" * 64][1] == "apns: APNs 413 PayloadTooLarge"
    assert scripted["fcm-registration-token-x"][1].startswith("fcm: FCM InvalidArgumentError")
