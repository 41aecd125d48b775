"""Memory: peak RSS of one `outbox worker` at concurrency 100 while it drains a backlog.

On a fresh database: one worker process (noop provider, concurrency C, batch B)
is started and left idle until it waits in LISTEN; its RSS then is the idle
figure. N pending email deliveries are inserted set-based (NOTIFY trigger off),
the worker's peak-RSS mark is reset (``/proc/PID/clear_refs``), one NOTIFY wakes
it, and its VmRSS is sampled every 50 ms until the queue is empty. Reported:
RSS idle, the peak during the drain (the kernel's high-water mark VmHWM since
the reset; where the reset is not allowed, the highest sample, which can miss a
short peak), and VmHWM just before the reset: the peak of start-up.

    python -m benchmarks.memory [--deliveries 20000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

import outbox
from benchmarks.harness import (
    Processes,
    Server,
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

TEMPLATE = "bench"
SAMPLE_S = 0.05


def status_kb(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux ≥ 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """One drain of ``args.deliveries`` by one worker, its RSS sampled throughout."""
    with (
        fresh_database(server, "memory") as url,
        tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        with psycopg.connect(url) as conn:
            outbox.create_template(conn, TEMPLATE, "email", "Hello {{ n }}", subject="Note {{ n }}")
        worker = procs.spawn(
            worker_command(),
            env=worker_env(
                url,
                providers_email='["noop"]',
                providers_sms='["noop"]',
                providers_push='["noop"]',
                worker_concurrency=args.concurrency,
                worker_batch_size=args.batch,
                # Only the NOTIFY wakes it: the idle figure is taken before any work.
                poll_interval_seconds=600,
            ),
            name="worker",
        )
        wait_sessions(url, "outbox-worker listen", 1, procs=[worker], owner=procs)
        time.sleep(0.5)  # its first claim after LISTEN is done; it is idle
        idle_kb = status_kb(worker.pid, "VmRSS")
        with psycopg.connect(url) as conn:
            conn.execute(sql("disable_notify_local"))
            conn.execute(
                sql("outbox_fill"), {"n": args.deliveries, "prefix": "mem-", "template": TEMPLATE}
            )
            conn.commit()
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            conn.execute(sql("outbox_analyze"))
            startup_kb = status_kb(worker.pid, "VmHWM")  # imports, connections, first claim
            exact = reset_peak(worker.pid)
            sampled_kb = status_kb(worker.pid, "VmRSS")
            started = time.monotonic()
            conn.execute(sql("outbox_go"))

            def drained() -> bool:
                nonlocal sampled_kb
                sampled_kb = max(sampled_kb, status_kb(worker.pid, "VmRSS"))
                left = conn.execute(sql("outbox_unfinished")).fetchone()
                return left["pending"] + left["processing"] == 0

            try:
                wait_for(
                    drained,
                    args.timeout,
                    f"the worker to drain {args.deliveries} deliveries",
                    interval=SAMPLE_S,
                )
            except TimeoutError as e:
                raise TimeoutError(f"{e}\n{procs.output(worker)[-3000:]}") from None
            seconds = time.monotonic() - started
            hwm_kb = status_kb(worker.pid, "VmHWM")
            r = conn.execute(sql("outbox_drain_result")).fetchone()
        code = procs.stop(worker)
        # Inside the block: the worker's log lives in the temporary directory.
        if code != 0:
            raise RuntimeError(f"worker exited with {code}:\n{procs.output(worker)[-3000:]}")
        if r["sent"] != args.deliveries or r["not_sent"]:
            raise RuntimeError(f"drain incomplete: {r}\n{procs.output(worker)[-3000:]}")
    peak_kb = max(hwm_kb, sampled_kb) if exact else sampled_kb
    log(f"worker RSS idle {idle_kb / 1024:.1f} MB, peak during the drain {peak_kb / 1024:.1f} MB")
    return {
        "settings": {
            "deliveries": args.deliveries,
            "concurrency": args.concurrency,
            "batch": args.batch,
            "provider": "noop",
        },
        "idle_rss_mb": idle_kb / 1024,
        "peak_rss_mb": peak_kb / 1024,
        "peak_method": "VmHWM since reset" if exact else f"highest VmRSS sample every {SAMPLE_S}s",
        "sampled_peak_rss_mb": sampled_kb / 1024,
        "startup_peak_rss_mb": startup_kb / 1024,
        "drain_seconds": seconds,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = [
        ("idle in LISTEN, before the drain", f"{result['idle_rss_mb']:.1f}"),
        (f"peak during the drain ({result['peak_method']})", f"**{result['peak_rss_mb']:.1f}**"),
        ("growth while draining", f"{result['peak_rss_mb'] - result['idle_rss_mb']:+.1f}"),
    ]
    if "startup_peak_rss_mb" in result:
        rows.insert(
            1, ("peak before the drain (VmHWM: start-up)", f"{result['startup_peak_rss_mb']:.1f}")
        )
    return "\n\n".join(
        [
            f"One `outbox worker`, `{s['provider']}` provider, concurrency {s['concurrency']}, "
            f"batch {s['batch']}, draining {num(s['deliveries'])} email deliveries "
            f"({result['drain_seconds']:.1f} s; RSS read from /proc).",
            md_table(["worker RSS", "MB"], rows),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deliveries", type=int, default=20_000, help="pending deliveries")
    parser.add_argument("--concurrency", type=int, default=100, help="worker sends in flight")
    parser.add_argument("--batch", type=int, default=100, help="worker claim batch size")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up on the drain after this"
    )


def main(argv: list[str] | None = None) -> None:
    standalone("memory", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
