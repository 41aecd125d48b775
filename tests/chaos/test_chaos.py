"""Chaos: nothing committed is lost, nothing rolled back is sent, duplicates are counted.

The run: 10,000 deliveries (email via SendGrid, SMS via Twilio, push via APNs
and FCM) through the provider sandbox, which fails 20% of requests transiently,
times some out and answers "dead" for a known set of destinations; two worker
processes, one of them killed with SIGKILL every few seconds and restarted;
PostgreSQL restarted once. Afterwards:

* no delivery is pending or processing; each is sent, or dead with a reason;
* the dead-letter queue holds exactly the numbers and tokens the sandbox was told
  to refuse as dead (SendGrid reports bounces later, by webhook: not in this run);
* per delivery, the sends the sandbox accepted beyond the first are no more than
  that delivery's own in-doubt attempts (a crash between the provider's
  acceptance and the recording, or a timeout, is the only way to duplicate, and
  each is counted on its delivery); a delivery with none in doubt was accepted at
  most once. In doubt counts only attempts whose send started (their
  'processing' event was committed before the request), so the bound is tight
  enough to fail: a recovery or timeout that forgot to count would show here.

The run uses its own embedded PostgreSQL (it must restart it), whatever
OUTBOX_DATABASE_URL says.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

import outbox
from outbox import embedded, migrate
from outbox.providers.testing import read_records
from outbox.sandbox import SandboxClient, apns, fcm, sendgrid, twilio
from tests.duplicates import beyond_doubt

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# Sized for 2 shared cores: the kills and the restart, not the volume, are the test.
EMAILS, SMS, PUSH_APNS, PUSH_FCM = 6_000, 2_500, 750, 750
DEAD_NUMBERS = [f"+1555000{i:04d}" for i in range(40)]
DEAD_TOKENS = [f"{i:064x}" for i in range(20)]


def _faults(seed: int) -> dict:
    def transient(vocabulary) -> dict:
        # Half of the errors are the provider's own transient error, half a 429 with
        # Retry-After (honoured by the worker: that delivery waits at least 1 s).
        return {
            "error_rate": 0.2,
            "errors": [vocabulary.default_error, "rate_limited"],
            "retry_after_s": 1,
            "timeout_rate": 0.002,
        }

    return {
        "seed": seed,
        "hang_s": 2.5,
        "providers": {
            # SendGrid accepts a dead address and reports the bounce later by webhook
            # (tests/integration/test_webhooks.py); permanent failures are injected on
            # the channels whose APIs refuse at send time.
            "sendgrid": transient(sendgrid.VOCABULARY),
            "twilio": {**transient(twilio.VOCABULARY), "dead": DEAD_NUMBERS},
            "apns": {**transient(apns.VOCABULARY), "dead": DEAD_TOKENS},
            "fcm": transient(fcm.VOCABULARY),
        },
    }


class SandboxProcess:
    """`outbox sandbox` in its own process (not sharing the test's GIL)."""

    def __init__(self, state_dir: Path, faults: dict) -> None:
        self.state_dir = state_dir
        self.proc = subprocess.Popen(
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
                json.dumps(faults),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        info_file = state_dir / "sandbox.json"
        deadline = time.monotonic() + 30
        while True:
            if info_file.exists():
                info = json.loads(info_file.read_text())
                if info.get("pid") == self.proc.pid:
                    self.client = SandboxClient(info["http_url"])
                    if self.client.health():
                        break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start: {self.proc.stdout.read()}")
            time.sleep(0.1)
        env_lines = (state_dir / "outbox.env").read_text().splitlines()
        self.env = dict(line.split("=", 1) for line in env_lines if "=" in line)
        self.env = {k: v.strip("'") for k, v in self.env.items()}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _populate(url: str) -> int:
    """Recipients/devices for push, templates, and 10,000 deliveries with unique destinations."""
    with psycopg.connect(url) as c:
        c.execute("UPDATE outbox.channel_config SET max_attempts = 25")  # 0.2^25: never exhausted
        outbox.create_template(c, "note", "email", "Note {{ n }}", subject="Note {{ n }}")
        outbox.create_template(c, "note", "sms", "Note {{ n }}")
        outbox.create_template(c, "note", "push", "Note {{ n }}", title="Note")
        c.execute("SET LOCAL outbox.notify = 'off'")
        c.execute(
            "INSERT INTO outbox.recipients (external_id) "
            "SELECT 'push-' || g FROM generate_series(1, %s) g",
            (PUSH_APNS + PUSH_FCM,),
        )
        c.execute(
            """
            INSERT INTO outbox.devices (recipient_id, platform, token)
            SELECT r.id, CASE WHEN r.id <= %s THEN 'apns' ELSE 'fcm' END,
                   CASE WHEN r.id <= %s THEN lpad(to_hex(r.id - 1), 64, '0')
                        ELSE 'fcm-token-' || lpad(r.id::text, 12, '0') END
            FROM outbox.recipients r""",
            (PUSH_APNS, PUSH_APNS),
        )
        c.commit()
        emails = [f"user{i}@example.com" for i in range(EMAILS)]
        numbers = DEAD_NUMBERS + [f"+1415{i:07d}" for i in range(SMS - len(DEAD_NUMBERS))]
        items = (
            [
                {"message_id": f"e-{i}", "address": a, "template": "note", "data": {"n": i}}
                for i, a in enumerate(emails)
            ]
            + [
                {"message_id": f"s-{i}", "address": a, "template": "note", "data": {"n": i}}
                for i, a in enumerate(numbers)
            ]
            + [
                {
                    "message_id": f"p-{i}",
                    "recipient": f"push-{i}",
                    "template": "note",
                    "channels": ["push"],
                    "data": {"n": i},
                }
                for i in range(1, PUSH_APNS + PUSH_FCM + 1)
            ]
        )
        for start in range(0, len(items), 2000):
            outbox.enqueue_many(c, items[start : start + 2000])
            c.commit()
        return c.execute("SELECT count(*) FROM outbox.deliveries").fetchone()[0]


def _spawn_worker(url: str, sandbox_env: dict, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(sandbox_env)
    env.update(
        {
            "OUTBOX_DATABASE_URL": url,
            "OUTBOX_PROVIDERS_EMAIL": '["sendgrid"]',
            "OUTBOX_PROVIDERS_SMS": '["twilio"]',
            "OUTBOX_PROVIDERS_PUSH": '["apns", "fcm"]',
            "OUTBOX_PROVIDER_TIMEOUT_SECONDS": "1",
            "OUTBOX_LEASE_SECONDS": "3",
            "OUTBOX_RECOVER_INTERVAL_SECONDS": "0.5",
            "OUTBOX_BACKOFF_BASE_SECONDS": "0.05",
            "OUTBOX_BACKOFF_CAP_SECONDS": "1",
            "OUTBOX_POLL_INTERVAL_SECONDS": "0.25",
            # Timeouts cluster when the machine is busy and may open a circuit breaker: keep
            # its cool-downs as short as the backoff, so the run still ends in time.
            "OUTBOX_BREAKER_COOLDOWN_SECONDS": "1",
            "OUTBOX_BREAKER_COOLDOWN_CAP_SECONDS": "2",
            "OUTBOX_LOG_LEVEL": "WARNING",
            "OUTBOX_LOG_FORMAT": "json",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "outbox", "worker"],
        env=env,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
    )


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=5) as c:
        return dict(
            c.execute("SELECT status::text, count(*) FROM outbox.deliveries GROUP BY 1").fetchall()
        )


@pytest.mark.timeout(600)  # the drain has its own deadline (300 s); populating and stopping add
def test_chaos_nothing_lost_duplicates_counted(tmp_path):
    rng = random.Random(20261124)
    data_dir = tmp_path / "pg"
    url = embedded.ensure_server(data_dir)
    sandbox = None
    workers: list[subprocess.Popen] = []
    try:
        migrate.upgrade(url)
        total = _populate(url)
        assert total == EMAILS + SMS + PUSH_APNS + PUSH_FCM
        sandbox = SandboxProcess(tmp_path / "sandbox", _faults(rng.randrange(10**6)))
        log = tmp_path / "workers.log"
        workers = [_spawn_worker(url, sandbox.env, log) for _ in range(2)]
        births = [time.monotonic()] * len(workers)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("NOTIFY outbox_work")

        kills, restarted_pg = 0, False
        started = time.monotonic()
        deadline = started + 300
        next_kill = started + 3
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            try:
                counts = _counts(url)
            except psycopg.OperationalError:
                continue  # PostgreSQL restarting
            if not counts.get("pending") and not counts.get("processing"):
                break
            if int(now - started) % 10 == 0 and now - started - int(now - started) < 0.25:
                print(f"chaos t={now - started:.0f}s {counts} kills={kills}", flush=True)
            assert now < deadline, f"not drained in time: {counts}"
            if not restarted_pg and counts.get("sent", 0) > total // 3:
                embedded.restart_server(data_dir)
                restarted_pg = True
            # Kill a random worker every few seconds, but only one that has had time to
            # start and claim (a loaded machine can take seconds to import a worker).
            grown = [i for i, born in enumerate(births) if now - born >= 4]
            if now >= next_kill and grown:
                victim = rng.choice(grown)
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = _spawn_worker(url, sandbox.env, log)
                births[victim] = time.monotonic()
                kills += 1
                next_kill = now + rng.uniform(3, 5)
        elapsed = time.monotonic() - started
        assert restarted_pg and kills >= 2, (
            f"too little chaos: {kills} kills, pg restarted: {restarted_pg}"
        )

        # A worker respawned a moment ago may not have installed its signal handlers
        # yet: wait until each has its claim connection open before asking it to stop.
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as c:
            for w in workers:
                while (
                    time.monotonic() < deadline
                    and not c.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s",
                        (f"outbox-worker claim %:{w.pid}:%",),
                    ).fetchone()
                ):
                    time.sleep(0.1)
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(timeout=30) == 0

        with psycopg.connect(url) as c:
            statuses = dict(
                c.execute("SELECT status::text, count(*) FROM outbox.deliveries GROUP BY 1")
            )
            dead = {
                r[0]: r[1]
                for r in c.execute(
                    "SELECT destination, last_error FROM outbox.deliveries WHERE status = 'dead'"
                )
            }
            # Destinations are unique in this run: the sandbox's records name deliveries by them.
            ids = dict(c.execute("SELECT destination, id FROM outbox.deliveries").fetchall())
            in_doubt = c.execute(
                "SELECT coalesce(sum(in_doubt), 0), count(*) FILTER (WHERE in_doubt > 0) "
                "FROM outbox.deliveries"
            ).fetchone()
            recoveries = dict(
                c.execute(
                    "SELECT (detail ->> 'in_doubt')::boolean, count(*) FROM outbox.events "
                    "WHERE kind = 'recovered' GROUP BY 1"
                ).fetchall()
            )
            no_reason = c.execute(
                "SELECT count(*) FROM outbox.deliveries "
                "WHERE status = 'dead' AND last_error IS NULL"
            ).fetchone()[0]
        accepted = (
            collections.Counter(  # sends only: not the FCM OAuth token grants it also records
                r["destination"]
                for r in sandbox.client.requests()
                if r["answer"] == "ok" and r["provider"] != "fcm_oauth"
            )
        )
        duplicates = sum(n - 1 for n in accepted.values() if n > 1)
        print(
            f"\nchaos: {total} deliveries in {elapsed:.1f}s, {kills} kill -9s, "
            "PostgreSQL restarted; "
            f"duplicates at the sandbox: {duplicates} "
            f"(on {sum(1 for n in accepted.values() if n > 1)} deliveries); "
            f"in-doubt attempts recorded: {in_doubt[0]} (on {in_doubt[1]} deliveries); "
            f"lease recoveries: {recoveries.get(True, 0)} started, "
            f"{recoveries.get(False, 0)} never started"
        )

        assert statuses == {"sent": total - len(dead), "dead": len(dead)}
        assert no_reason == 0
        assert set(dead) == set(DEAD_NUMBERS) | set(DEAD_TOKENS)
        assert len(accepted) == total - len(dead), "every sent delivery was accepted by the sandbox"
        assert set(accepted) <= set(ids), "the sandbox accepted sends to no delivery"
        with psycopg.connect(url) as c:
            over = beyond_doubt(c, {ids[dest]: n for dest, n in accepted.items()})
        assert not over, (
            f"{len(over)} deliveries accepted more often than their in-doubt attempts "
            f"allow: {over[:20]}"
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        if sandbox is not None:
            sandbox.stop()
        embedded.stop_server(data_dir)


def test_rolled_back_producers_are_never_delivered(db_url, tmp_path):
    """Producers commit or roll back at random while two workers run: exactly the committed
    notifications are delivered, each exactly once."""
    with psycopg.connect(db_url) as c:
        outbox.create_template(c, "note", "sms", "Note {{ n }}")
        c.commit()
    record = tmp_path / "sent.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(
        {
            "OUTBOX_DATABASE_URL": db_url,
            "OUTBOX_PROVIDERS_SMS": '["record"]',
            "OUTBOX_RECORD_FILE": str(record),
            "OUTBOX_LOG_LEVEL": "WARNING",
        }
    )
    workers = [
        subprocess.Popen([sys.executable, "-m", "outbox", "worker", "--channel", "sms"], env=env)
        for _ in range(2)
    ]
    committed: list[str] = []
    lock = threading.Lock()

    def producer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(db_url) as c:
            for i in range(250):
                message_id = f"p{seed}-{i}"
                outbox.enqueue(
                    c, message_id, address=f"+1415{seed:03d}{i:04d}", template="note", data={"n": i}
                )
                if rng.random() < 0.5:
                    c.rollback()
                else:
                    c.commit()
                    with lock:
                        committed.append(message_id)

    try:
        threads = [threading.Thread(target=producer, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 60
        while len(read_records(record)) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # anything extra would show up now
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    sent = collections.Counter(r["message_id"] for r in read_records(record))
    assert 300 < len(committed) < 700
    assert set(sent) == set(committed)
    assert set(sent.values()) == {1}
