"""Deliveries per second end to end through each provider adapter, to the provider sandbox.

For each adapter (SendGrid, Mailchimp, Twilio, Vonage, APNs, FCM) and each
number of worker processes, on one fresh database:

1. ``outbox worker`` processes start, configured for that adapter's channel
   only, with that adapter as the channel's one provider, and sit idle in
   LISTEN (the benchmark waits until each one's listen connection shows in
   pg_stat_activity);
2. the CPU time used so far by each worker process (and by the sandbox) is
   read from /proc;
3. N notifications for that channel are enqueued in ONE transaction
   (``enqueue_many``); its last statement reads the database clock (t0), and
   its commit's NOTIFY wakes the workers;
4. when no delivery is pending or processing, the rate is
   N / (max(sent_at) - t0), and CPU per delivery is the worker processes'
   user+sys time spent meanwhile / N (the sandbox's likewise, shown apart: it
   shares the machine).

Everything runs on this machine: the sandbox in its own process
(``outbox sandbox --port 0 --tls-port 0 --state-dir DIR``, which writes
``DIR/outbox.env``, the settings pointing every adapter at it), PostgreSQL,
and the workers. No faults are injected: this measures the cost of the path,
not of retries. The sandbox's records are reset before each run.

    python -m benchmarks.providers [--adapters sendgrid apns] [--deliveries 2000] [--processes 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

import outbox
from benchmarks.drain import cpu_seconds
from benchmarks.harness import (
    Processes,
    Server,
    add_before_argument,
    clean_env,
    fresh_database,
    log,
    md_table,
    num,
    sql,
    standalone,
    wait_for,
    wait_sessions,
    worker_command,
    worker_env,
)
from outbox.sandbox import SandboxClient

ADAPTERS = {  # adapter -> the channel it serves
    "sendgrid": "email",
    "mailchimp": "email",
    "twilio": "sms",
    "vonage": "sms",
    "apns": "push",
    "fcm": "push",
}
TEMPLATE = "bench"
START_TIMEOUT_S = 60.0
LISTEN_PREFIX = "outbox-worker listen"


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
                TEMPLATE,
                channel,
                "Order {{ order }} is confirmed.",
                subject="Order {{ order }}" if channel == "email" else None,
                title="Order" if channel == "push" else None,
            )
        conn.commit()


def start_sandbox(
    procs: Processes, state_dir: Path
) -> tuple[subprocess.Popen[bytes], dict[str, str], str]:
    """``outbox sandbox`` in a child process: (the process, its OUTBOX_* settings, its URL)."""
    from dotenv import dotenv_values

    state_dir.mkdir()
    proc = procs.spawn(
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
        env=clean_env(),
        name="sandbox",
    )
    # It writes sandbox.json, then outbox.env: once the second exists, the first is complete.
    info, env_file = state_dir / "sandbox.json", state_dir / "outbox.env"

    def answers() -> str | None:
        if proc.poll() is not None:
            raise RuntimeError(
                f"outbox sandbox exited with {proc.returncode}:\n{procs.output(proc)[-3000:]}"
            )
        if not env_file.exists():
            return None
        http_url = json.loads(info.read_text())["http_url"]
        with contextlib.closing(SandboxClient(http_url)) as client:
            return http_url if client.health() else None

    http_url = wait_for(answers, START_TIMEOUT_S, "the provider sandbox to answer", interval=0.05)
    settings = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    return proc, settings, http_url


def _listening(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql("listening_sessions"), {"prefix": LISTEN_PREFIX}).fetchone()[0]


def run_one(
    url: str,
    procs: Processes,
    sandbox: subprocess.Popen[bytes],
    sandbox_env: dict[str, str],
    *,
    adapter: str,
    processes: int,
    deliveries: int,
    concurrency: int,
    timeout: float,
    python: str | None = None,
) -> dict[str, Any]:
    """One drain of ``deliveries`` notifications through ``adapter`` by ``processes`` workers.

    ``python``: run the workers with that interpreter's ``outbox`` (``-P``: not
    this checkout's, which is the working directory) instead of this one's.
    """
    channel = ADAPTERS[adapter]
    # The sandbox's settings, then ours (ours win): only this channel, only this adapter.
    env = sandbox_env | worker_env(
        url,
        worker_channels=json.dumps([channel]),
        worker_concurrency=concurrency,
        **{f"providers_{channel}": json.dumps([adapter])},
    )
    # The previous run's sessions must be gone, or they would count as this run's.
    wait_for(lambda: _listening(url) == 0, 30, "the previous workers' sessions to end")
    command = worker_command(python)
    workers = [procs.spawn(command, env=env, name=f"worker-{adapter}") for _ in range(processes)]
    prefix = f"{adapter}-{processes}-{uuid.uuid4().hex[:6]}-"
    recipient = "f" if adapter == "fcm" else "a"
    items = [
        {
            "message_id": f"{prefix}{i}",
            "recipient": f"{recipient}-{i}",
            "template": TEMPLATE,
            "channels": [channel],
            "data": {"order": i},
        }
        for i in range(deliveries)
    ]
    try:
        wait_sessions(url, LISTEN_PREFIX, processes, procs=workers, owner=procs)
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor(row_factory=dict_row)
            cpu0 = sum(cpu_seconds(w.pid) for w in workers)
            sandbox0 = cpu_seconds(sandbox.pid)
            with conn.transaction():
                outbox.enqueue_many(conn, items)
                # Read last before the commit: the commit and the wake-up count in the time.
                t0 = cur.execute(sql("providers_clock")).fetchone()["t0"]

            def drained() -> bool:
                left = cur.execute(sql("outbox_unfinished")).fetchone()
                return left["pending"] + left["processing"] == 0

            # Rare polls: the rate comes from max(sent_at), not from when this notices the end.
            try:
                wait_for(
                    drained,
                    timeout,
                    f"{processes} worker(s) to send {deliveries} {channel} through {adapter}",
                    interval=0.1,
                )
            except TimeoutError as e:
                raise TimeoutError(f"{e}\n{procs.output(workers[0])[-3000:]}") from None
            cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu0
            sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox0
            r = cur.execute(sql("providers_result"), {"prefix": prefix}).fetchone()
            reasons = cur.execute(sql("providers_retry_reasons"), {"prefix": prefix}).fetchall()
    finally:
        codes = [procs.stop(w) for w in workers]
    if any(codes):
        raise RuntimeError(f"worker exit codes {codes}:\n{procs.output(workers[0])[-3000:]}")
    seconds = r["last_sent"] - t0 if r["last_sent"] is not None else float("nan")
    return {
        "adapter": adapter,
        "version": "before" if python else "this",
        "channel": channel,
        "processes": processes,
        "deliveries": deliveries,
        "seconds": seconds,
        "rate": r["sent"] / seconds,
        "worker_cpu_ms_per_delivery": 1000 * cpu / deliveries,
        "sandbox_cpu_ms_per_delivery": 1000 * sandbox_cpu / deliveries,
        "not_sent": r["not_sent"],
        "retried": r["retried"],
        "retry_reasons": ", ".join(f"{x['outcome']}/{x['error']} x{x['n']}" for x in reasons),
    }


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Every adapter at every process count, against one sandbox and one database."""
    runs = []
    with (
        fresh_database(server, "providers") as url,
        tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        log(
            f"setting up {args.deliveries} recipients with an APNs device and {args.deliveries} "
            f"with an FCM device"
        )
        load_recipients(url, args.deliveries)
        sandbox, sandbox_env, http_url = start_sandbox(procs, Path(tmp) / "sandbox")
        with contextlib.closing(SandboxClient(http_url)) as client:
            # With --before, each run is followed (or, every other time, preceded) by the
            # same run with the other interpreter's workers.
            pythons: list[str | None] = [None, args.before] if args.before else [None]
            cases = list(itertools.product(args.adapters, args.processes))
            for n, (adapter, processes) in enumerate(cases):
                for python in pythons[n % len(pythons) :] + pythons[: n % len(pythons)]:
                    client.reset()  # forget the previous run's requests: same state each run
                    r = run_one(
                        url,
                        procs,
                        sandbox,
                        sandbox_env,
                        adapter=adapter,
                        processes=processes,
                        deliveries=args.deliveries,
                        concurrency=args.concurrency,
                        timeout=args.timeout,
                        python=python,
                    )
                    log(
                        f"{adapter} x{processes} ({r['version']}): {r['rate']:,.0f}/s, "
                        f"worker CPU {r['worker_cpu_ms_per_delivery']:.2f} ms/delivery"
                        + (f", {r['not_sent']} not sent" if r["not_sent"] else "")
                        + (
                            f", {r['retried']} retried ({r['retry_reasons']})"
                            if r["retried"]
                            else ""
                        )
                    )
                    runs.append(r)
    return {
        "settings": {
            "adapters": args.adapters,
            "processes": args.processes,
            "deliveries": args.deliveries,
            "concurrency": args.concurrency,
            "before": args.before,
        },
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = [
        (
            f"`{r['adapter']}`" + (" (before)" if r.get("version") == "before" else ""),
            r["channel"],
            r["processes"],
            f"**{num(r['rate'])}**",
            f"{r['seconds']:.2f}",
            f"{r['worker_cpu_ms_per_delivery']:.2f}",
            f"{r['sandbox_cpu_ms_per_delivery']:.2f}",
            num(r["not_sent"]),
            f"{num(r['retried'])}" + (f" ({r['retry_reasons']})" if r["retry_reasons"] else ""),
        )
        for r in result["runs"]
    ]
    return "\n\n".join(
        [
            f"{num(s['deliveries'])} notifications per run, enqueued in one transaction, sent by "
            f"`outbox worker` processes (concurrency {s['concurrency']} each) through one adapter "
            f"to the provider sandbox over HTTP (APNs: HTTP/2 over TLS) on this machine; no "
            f"faults injected. Rate = sent / (last `sent_at` − the clock read just before the "
            f"enqueue's commit); CPU from /proc, the sandbox's shown apart (it shares the cores).",
            md_table(
                [
                    "adapter",
                    "channel",
                    "workers",
                    "deliveries/s",
                    "seconds",
                    "worker CPU ms/delivery",
                    "sandbox CPU ms/delivery",
                    "not sent",
                    "retried",
                ],
                rows,
            ),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapters", nargs="+", choices=list(ADAPTERS), default=list(ADAPTERS), help="adapters"
    )
    parser.add_argument(
        "--processes", nargs="+", type=int, default=[1, 2], help="worker process counts"
    )
    parser.add_argument("--deliveries", type=int, default=2000, help="notifications per run")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="sends in flight per worker process"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one run after this"
    )
    add_before_argument(
        parser,
        "also run each case with this interpreter's outbox worker, alternating, e.g. "
        "another checkout's .venv/bin/python",
    )


def main(argv: list[str] | None = None) -> None:
    standalone("providers", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
