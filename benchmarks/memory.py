"""Memory: peak RSS of one `outbox worker` at concurrency 100 while it drains a backlog.

On a fresh database of the configured server (OUTBOX_DATABASE_URL, else the
embedded one): N pending email deliveries are inserted set-based (NOTIFY off),
one worker process (noop provider, concurrency 100, batch 100) is woken, and its
VmRSS / VmHWM (the kernel's high-water mark) are read from /proc every 50 ms
until the queue is empty. Reports the RSS when idle before the drain and the
peak during it.

    .venv/bin/python -m benchmarks.memory --deliveries 20000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from outbox import migrate
from outbox.db import resolve_url
from outbox.settings import Settings


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def run(deliveries: int, concurrency: int) -> dict[str, float]:
    server = resolve_url(Settings())
    params = conninfo_to_dict(server)
    name = f"outbox_bench_memory_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(**{**params, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(**{**params, "dbname": name})
    worker = None
    try:
        migrate.upgrade(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
        env.update({"OUTBOX_DATABASE_URL": url, "OUTBOX_PROVIDERS_EMAIL": '["noop"]',
                    "OUTBOX_PROVIDERS_SMS": '["noop"]', "OUTBOX_PROVIDERS_PUSH": '["noop"]',
                    "OUTBOX_WORKER_CONCURRENCY": str(concurrency), "OUTBOX_WORKER_BATCH_SIZE": "100",
                    "OUTBOX_LOG_LEVEL": "WARNING"})
        worker = subprocess.Popen([sys.executable, "-m", "outbox", "worker"], env=env)
        with psycopg.connect(url, autocommit=True) as c:
            deadline = time.monotonic() + 60
            while not c.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s",
                                ("outbox-worker listen %",)).fetchone():
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not start")
                time.sleep(0.1)
            time.sleep(0.5)
            idle_kb = _status_kb(worker.pid, "VmRSS")
            c.execute("SELECT outbox.create_template('note', 'email', 'Note {{ n }}', subject => 'Note {{ n }}')")
            with c.transaction():
                c.execute("SET LOCAL outbox.notify = 'off'")
                c.execute("""
                    INSERT INTO outbox.notifications (message_id, address, template_key, data, channels)
                    SELECT 'm-' || g, 'user' || g || '@example.com', 'note', jsonb_build_object('n', g), '{email}'
                    FROM generate_series(1, %s) g""", (deliveries,))
                c.execute("""
                    INSERT INTO outbox.deliveries (notification_id, channel, destination, max_attempts)
                    SELECT id, 'email', address, 5 FROM outbox.notifications""")
            started = time.monotonic()
            c.execute("NOTIFY outbox_work")
            peak_kb = idle_kb
            while c.execute("SELECT count(*) FROM outbox.deliveries WHERE status IN ('pending', 'processing')"
                            ).fetchone()[0]:
                peak_kb = max(peak_kb, _status_kb(worker.pid, "VmHWM"))
                if time.monotonic() - started > 300:
                    raise RuntimeError("the drain did not finish in 300 s")
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            peak_kb = max(peak_kb, _status_kb(worker.pid, "VmHWM"))
        return {"deliveries": deliveries, "concurrency": concurrency, "idle_rss_mb": idle_kb / 1024,
                "peak_rss_mb": peak_kb / 1024, "drain_seconds": elapsed}
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    r = run(args.deliveries, args.concurrency)
    print(f"worker at concurrency {r['concurrency']}: idle RSS {r['idle_rss_mb']:.1f} MB, "
          f"peak RSS {r['peak_rss_mb']:.1f} MB while draining {r['deliveries']:,} deliveries "
          f"in {r['drain_seconds']:.1f} s")


if __name__ == "__main__":
    main()
