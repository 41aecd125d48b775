"""Deliveries per second end to end through each provider adapter, to the provider sandbox.

    .venv/bin/python -m benchmarks.providers             # every adapter, 1 and 2 workers
    .venv/bin/python -m benchmarks.providers --adapters sendgrid apns --deliveries 1000 \
        --processes 1

For each adapter (SendGrid, Mailchimp, Twilio, Vonage, APNs, FCM) and each
number of worker processes:

1. ``outbox worker`` processes start, configured for that adapter's channel
   only, with that adapter as the channel's one provider, and sit idle in
   LISTEN (the benchmark waits until each one's listen connection shows in
   pg_stat_activity);
2. the CPU time used so far by each worker process (and by the sandbox) is
   read from /proc;
3. N notifications for that channel are enqueued in ONE transaction
   (``enqueue_many``), the database clock is read right after its commit, and
   the NOTIFY wakes the workers;
4. when no delivery is pending or processing, the rate is
   N / (max(sent_at) - that clock reading), and CPU per delivery is the worker
   processes' user+sys time spent meanwhile / N (the sandbox's likewise, shown
   apart: it shares the machine).

Everything runs on this machine: the sandbox in its own process
(``outbox sandbox --port 0 --tls-port 0 --state-dir DIR``, which writes
``DIR/outbox.env``, the settings pointing every adapter at it), PostgreSQL
(``OUTBOX_DATABASE_URL``, else the embedded server), and the workers. No
faults are injected: this measures the cost of the path, not of retries. The
benchmark creates a database of its own and drops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import outbox
from outbox import migrate
from outbox.db import resolve_url
from outbox.sandbox import SandboxClient
from outbox.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = {  # adapter -> the channel it serves
    "sendgrid": "email",
    "mailchimp": "email",
    "twilio": "sms",
    "vonage": "sms",
    "apns": "push",
    "fcm": "push",
}
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 600.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The benchmark's own SQL (the product's lives in sql/).
SQL_LISTENING = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name LIKE 'outbox-worker listen %%'"""
SQL_UNFINISHED = "SELECT count(*) FROM outbox.deliveries WHERE status IN ('pending', 'processing')"
SQL_RESULT = """
    SELECT count(*) FILTER (WHERE status = 'sent'),
           count(*) FILTER (WHERE status <> 'sent'),
           extract(epoch FROM max(sent_at) - %(t0)s)::float8,
           count(*) FILTER (WHERE attempts > 1)
    FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id
    WHERE n.message_id LIKE %(prefix)s"""
SQL_RETRY_REASONS = """
    SELECT e.detail->>'outcome' AS outcome, e.detail->>'error' AS error, count(*)
    FROM outbox.events e JOIN outbox.notifications n ON n.id = e.notification_id
    WHERE n.message_id LIKE %(prefix)s AND e.kind = 'retry'
    GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 3"""


@dataclass
class Result:
    adapter: str
    channel: str
    processes: int
    deliveries: int
    seconds: float
    per_second: float
    worker_cpu_ms_per_delivery: float
    sandbox_cpu_ms_per_delivery: float
    not_sent: int
    retried: int
    # The commonest reasons of the retries, "outcome/error x count" (none expected: no faults).
    retry_reasons: str = ""


# -- processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the benchmark dies (even by kill -9)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


def _stop(procs: list[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by process ``pid`` so far (Linux /proc)."""
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: fields 14 and 15


def _clean_env() -> dict[str, str]:
    """This environment without OUTBOX_* (a developer's own settings must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}


@contextlib.contextmanager
def sandbox(
    state_dir: Path, log_dir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """``outbox sandbox`` in its own process; yields it and the OUTBOX_* settings pointing at it."""
    proc = _spawn(
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
        ],
        _clean_env(),
        log_dir / "sandbox.log",
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"outbox sandbox exited ({proc.returncode}); see {log_dir / 'sandbox.log'}"
                )
            info, env_file = state_dir / "sandbox.json", state_dir / "outbox.env"
            if info.exists() and env_file.exists():
                with contextlib.closing(
                    SandboxClient(json.loads(info.read_text())["http_url"])
                ) as c:
                    if c.health():
                        break
            if time.monotonic() > deadline:
                raise SystemExit("outbox sandbox did not start")
            time.sleep(0.05)
        from dotenv import dotenv_values

        yield proc, {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    finally:
        _stop([proc])


@contextlib.contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A fresh database migrated to head, dropped afterwards whatever happens."""
    params = conninfo_to_dict(server_url)
    admin = make_conninfo("", **{**params, "dbname": "postgres"})
    name = f"outbox_bench_providers_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo("", **{**params, "dbname": name})
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _one(conn: psycopg.Connection, sql: str, params: dict[str, object] | None = None) -> tuple:
    """The one row ``sql`` returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row


# -- the run --------------------------------------------------------------------------------


def load_recipients(url: str, n: int) -> None:
    """``n`` recipients with an APNs device (a-*) and ``n`` with an FCM device (f-*); templates."""
    with psycopg.connect(url) as conn:
        for i in range(n):
            outbox.upsert_recipient(
                conn, f"a-{i}", email=f"a{i}@example.com", phone=f"+1415{i:07d}"
            )
            outbox.register_device(conn, f"a-{i}", f"{i:064x}", "apns")
            outbox.upsert_recipient(conn, f"f-{i}")
            outbox.register_device(conn, f"f-{i}", f"fcm-registration-token-{i:08d}", "fcm")
        for channel in ("email", "sms", "push"):
            outbox.create_template(
                conn,
                "bench",
                channel,
                "Order {{ order }} is confirmed.",
                subject="Order {{ order }}" if channel == "email" else None,
                title="Order" if channel == "push" else None,
            )
        conn.commit()


def worker_env(
    url: str, sandbox_env: dict[str, str], adapter: str, concurrency: int
) -> dict[str, str]:
    channel = ADAPTERS[adapter]
    env = _clean_env()
    env.update(sandbox_env)
    env.update(
        {
            "OUTBOX_DATABASE_URL": url,
            "OUTBOX_WORKER_CHANNELS": json.dumps([channel]),
            f"OUTBOX_PROVIDERS_{channel.upper()}": json.dumps([adapter]),
            "OUTBOX_WORKER_CONCURRENCY": str(concurrency),
            "OUTBOX_LOG_LEVEL": "WARNING",
            "OUTBOX_LOG_FORMAT": "json",
        }
    )
    return env


def run_one(
    url: str,
    sandbox_proc: subprocess.Popen[bytes],
    sandbox_env: dict[str, str],
    adapter: str,
    processes: int,
    deliveries: int,
    concurrency: int,
    run_id: str,
    log_dir: Path,
) -> Result:
    channel = ADAPTERS[adapter]
    env = worker_env(url, sandbox_env, adapter, concurrency)
    log = log_dir / f"workers-{adapter}-{processes}.log"
    workers = [
        _spawn([sys.executable, "-m", "outbox", "worker"], env, log) for _ in range(processes)
    ]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + START_TIMEOUT_S
            while _one(conn, SQL_LISTENING)[0] < processes:
                if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
                    raise SystemExit(f"workers did not start; see {log}")
                time.sleep(0.05)
            prefix = f"{run_id}-"
            recipient = "f" if adapter == "fcm" else "a"
            items = [
                {
                    "message_id": f"{prefix}{i}",
                    "recipient": f"{recipient}-{i}",
                    "template": "bench",
                    "channels": [channel],
                    "data": {"order": i},
                }
                for i in range(deliveries)
            ]
            cpu0 = sum(cpu_seconds(w.pid) for w in workers)
            sandbox0 = cpu_seconds(sandbox_proc.pid)
            with conn.transaction():
                outbox.enqueue_many(conn, items)
            t0 = _one(conn, "SELECT clock_timestamp()")[0]
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while _one(conn, SQL_UNFINISHED)[0]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{adapter}: not drained after {DRAIN_TIMEOUT_S}s; see {log}")
                time.sleep(0.02)
            cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu0
            sandbox_cpu = cpu_seconds(sandbox_proc.pid) - sandbox0
            sent, not_sent, seconds, retried = _one(
                conn, SQL_RESULT, {"t0": t0, "prefix": prefix + "%"}
            )
            reasons = conn.execute(SQL_RETRY_REASONS, {"prefix": prefix + "%"}).fetchall()
    finally:
        _stop(workers)
    seconds = seconds or float("nan")
    return Result(
        adapter,
        channel,
        processes,
        deliveries,
        round(seconds, 3),
        round(sent / seconds, 1),
        round(1000 * cpu / deliveries, 3),
        round(1000 * sandbox_cpu / deliveries, 3),
        not_sent,
        retried,
        ", ".join(f"{outcome}/{error} x{n}" for outcome, error, n in reasons),
    )


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", nargs="+", choices=list(ADAPTERS), default=list(ADAPTERS))
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--deliveries", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="sends in flight per worker process"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    server = resolve_url(Settings())
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="outbox-bench-providers-") as tmp:
        state_dir, log_dir = Path(tmp) / "sandbox", Path(tmp) / "logs"
        state_dir.mkdir()
        log_dir.mkdir()
        with (
            bench_database(server) as url,
            sandbox(state_dir, log_dir) as (sandbox_proc, sandbox_env),
        ):
            load_recipients(url, args.deliveries)
            print(
                f"{'adapter':<10} {'channel':<6} {'procs':>5} {'deliveries':>10} {'seconds':>8} "
                f"{'per s':>8} {'worker CPU ms/dlv':>17} {'sandbox CPU ms/dlv':>18} {'not sent':>8}"
            )
            for adapter in args.adapters:
                for processes in args.processes:
                    run_id = f"{adapter}-{processes}-{uuid.uuid4().hex[:6]}"
                    r = run_one(
                        url,
                        sandbox_proc,
                        sandbox_env,
                        adapter,
                        processes,
                        args.deliveries,
                        args.concurrency,
                        run_id,
                        log_dir,
                    )
                    results.append(r)
                    print(
                        f"{r.adapter:<10} {r.channel:<6} {r.processes:>5} {r.deliveries:>10} "
                        f"{r.seconds:>8.2f} {r.per_second:>8.1f} "
                        f"{r.worker_cpu_ms_per_delivery:>17.2f} "
                        f"{r.sandbox_cpu_ms_per_delivery:>18.2f} {r.not_sent:>8}",
                        flush=True,
                    )
                    if r.retried:
                        print(f"  {r.retried} deliveries retried: {r.retry_reasons}", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"cpus": os.cpu_count(), "results": [asdict(r) for r in results]}, indent=2)
            + "\n"
        )
    return results


if __name__ == "__main__":
    main()
