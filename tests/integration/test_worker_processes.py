"""Real `outbox worker` processes sharing one queue: exactly once, kill -9, PostgreSQL restart."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import outbox
from outbox.providers.testing import read_records
from tests.duplicates import beyond_doubt

pytestmark = pytest.mark.slow


def _enqueue_emails(db_url: str, n: int, prefix: str = "m") -> None:
    with psycopg.connect(db_url) as c:
        outbox.create_template(c, "note", "email", "Note {{ n }}", subject="Note {{ n }}")
        for start in range(0, n, 1000):
            outbox.enqueue_many(
                c,
                [
                    {
                        "message_id": f"{prefix}-{i}",
                        "address": f"user{i}@example.com",
                        "template": "note",
                        "data": {"n": i},
                    }
                    for i in range(start, min(n, start + 1000))
                ],
            )
        c.commit()


def _spawn(db_url: str, record_file: Path, **env: str) -> subprocess.Popen:
    environment = {
        **os.environ,
        "OUTBOX_DATABASE_URL": db_url,
        "OUTBOX_PROVIDERS_EMAIL": '["record"]',
        "OUTBOX_PROVIDERS_SMS": '["record"]',
        "OUTBOX_PROVIDERS_PUSH": '["record"]',
        "OUTBOX_RECORD_FILE": str(record_file),
        "OUTBOX_LOG_LEVEL": "WARNING",
        "OUTBOX_WORKER_CONCURRENCY": "50",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "outbox", "worker"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_drained(db_url: str, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as c:
        while True:
            counts = dict(
                c.execute("SELECT status::text, count(*) FROM outbox.deliveries GROUP BY 1")
            )
            if not counts.get("pending") and not counts.get("processing"):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"not drained after {timeout}s: {counts}")
            time.sleep(0.2)


def _stop(procs: list[subprocess.Popen]) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=30))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_send_every_delivery_exactly_once(db_url, tmp_path, processes):
    _enqueue_emails(db_url, 5000)
    record = tmp_path / "sent.jsonl"
    procs = [_spawn(db_url, record) for _ in range(processes)]
    try:
        counts = _wait_drained(db_url, timeout=120)
    finally:
        codes = _stop(procs)
    assert counts == {"sent": 5000}
    assert codes == [0] * processes, [p.stdout.read() for p in procs]
    sends = collections.Counter(r["delivery_id"] for r in read_records(record))
    assert len(sends) == 5000
    assert set(sends.values()) == {1}, "some delivery was sent twice"
    assert len({r["pid"] for r in read_records(record)}) == processes, "every process took a share"


def test_kill_9_mid_batch_loses_nothing(db_url, tmp_path):
    _enqueue_emails(db_url, 400)
    record = tmp_path / "sent.jsonl"
    slow = {
        "OUTBOX_LOCAL_PROVIDER_DELAY_SECONDS": "0.25",
        "OUTBOX_LEASE_SECONDS": "2",
        "OUTBOX_RECOVER_INTERVAL_SECONDS": "0.5",
    }
    victim = _spawn(db_url, record, **slow)
    survivor = _spawn(db_url, record, **slow)
    try:
        # Wait until the victim holds a claimed batch, then kill it without warning.
        deadline = time.monotonic() + 30
        with psycopg.connect(db_url, autocommit=True) as c:
            while True:
                held = c.execute(
                    "SELECT count(*) FROM outbox.deliveries WHERE status = 'processing' "
                    "AND lease_owner LIKE %s",
                    (f"%:{victim.pid}:%",),
                ).fetchone()[0]
                if held or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        if not held:
            victim.kill()
            raise AssertionError(victim.stdout.read()[-3000:])
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        counts = _wait_drained(db_url, timeout=120)
    finally:
        _stop([survivor])
    assert counts == {"sent": 400}
    with psycopg.connect(db_url) as c:
        recovered = c.execute(
            "SELECT count(*) FROM outbox.events WHERE kind = 'recovered'"
        ).fetchone()[0]
        assert recovered >= held
        sends = collections.Counter(r["delivery_id"] for r in read_records(record))
        assert len(sends) == 400
        # A duplicate is only possible for a send the dead worker made but never recorded,
        # and every such row was counted in doubt when its lease was recovered.
        assert beyond_doubt(c, sends) == []


def test_postgres_restart_under_a_running_worker(tmp_path):
    from outbox import embedded, migrate

    data_dir = tmp_path / "pg"
    url = embedded.ensure_server(data_dir)
    try:
        migrate.upgrade(url)
        _enqueue_emails(url, 3000)
        record = tmp_path / "sent.jsonl"
        worker = _spawn(
            url, record, OUTBOX_LOCAL_PROVIDER_DELAY_SECONDS="0.01", OUTBOX_WORKER_CONCURRENCY="20"
        )
        try:
            deadline = time.monotonic() + 30
            while len(read_records(record)) < 300 and time.monotonic() < deadline:
                time.sleep(0.05)
            embedded.restart_server(data_dir)
            counts = _wait_drained(url, timeout=120)
            assert worker.poll() is None, "the worker must survive the restart"
        finally:
            codes = _stop([worker])
        output = worker.stdout.read()
        assert codes == [0], output
        assert counts == {"sent": 3000}
        assert "db.connection_lost" in output
        sends = collections.Counter(r["delivery_id"] for r in read_records(record))
        assert len(sends) == 3000
        with psycopg.connect(url) as c:
            assert beyond_doubt(c, sends) == []
    finally:
        embedded.stop_server(data_dir)
