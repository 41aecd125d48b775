"""The helper processes the benchmarks start (each one bounded in time).

    python -m benchmarks.agents producer URL --kind address --notify on --start-at T --duration S
    python -m benchmarks.agents raw-loop URL --batch 100 --timeout S [--shape one-statement]
    python -m benchmarks.agents listener URL --channel outbox_work --out FILE --timeout S

* ``producer``: from wall-clock time T for S seconds, one ``outbox.enqueue`` per
  transaction, committed; prints ``{"commits": n, "seconds": s}``.
* ``raw-loop``: the minimal SKIP LOCKED consumer: waits (in LISTEN) for the
  go signal, then until a claim finds nothing: claims a batch (committed, rows
  read), then marks it done (committed); with ``--shape one-statement``, claims
  and completes each batch in one statement instead (a floor, not a queue).
  Prints ``{"batches": b, "rows": n, "cpu_s": s}``.
* ``listener``: the bare LISTEN loop: appends ``time.time()`` of every
  notification's arrival to FILE, one line each.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import psycopg
from psycopg import sql as pgsql

from benchmarks.harness import sql

# Untimed enqueues before the start time.
WARMUP = 20


def producer(args: argparse.Namespace) -> None:
    import outbox

    with psycopg.connect(args.url, application_name="bench-producer") as conn:
        if args.notify == "off":
            conn.execute(sql("disable_notify"))
            conn.commit()

        def enqueue(message_id: str, i: int) -> None:
            if args.kind == "recipient":
                outbox.enqueue(
                    conn,
                    message_id,
                    recipient=f"user-{i % args.recipients}",
                    template="bench",
                    data={"n": i},
                )
            else:
                outbox.enqueue(
                    conn,
                    message_id,
                    address=f"user{i}@example.com",
                    template="bench",
                    data={"n": i},
                )
            conn.commit()

        for i in range(WARMUP):  # imports, plan caches, prepared statements: not timed
            enqueue(f"{args.prefix}-warmup-{i}", i)
        wait = args.start_at - time.time()
        if wait > 0:
            time.sleep(wait)
        late = max(0.0, -wait)
        end = args.start_at + args.duration
        commits = 0
        started = time.perf_counter()
        while time.time() < end:
            enqueue(f"{args.prefix}-{commits}", commits)
            commits += 1
        print(
            json.dumps(
                {"commits": commits, "seconds": time.perf_counter() - started, "late": late}
            ),
            flush=True,
        )


def raw_loop(args: argparse.Namespace) -> None:
    with psycopg.connect(args.url, autocommit=True, application_name="bench-raw-loop") as conn:
        conn.execute(sql("raw_listen"))
        for _ in conn.notifies(timeout=args.timeout, stop_after=1):
            break
        else:
            raise SystemExit("raw-loop: no go signal")
        deadline = time.monotonic() + args.timeout
        batches = rows = 0
        cpu = time.process_time()
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                if args.shape == "one-statement":
                    cur.execute(sql("raw_claim_done"), {"limit": args.batch}, prepare=True)
                    claimed = cur.rowcount
                else:
                    cur.execute(sql("raw_claim"), {"limit": args.batch}, prepare=True)
                    ids = [row[0] for row in cur.fetchall()]
                    claimed = len(ids)
                    if ids:
                        cur.execute(sql("raw_done"), {"ids": ids}, prepare=True)
                if claimed == 0:
                    break
                batches += 1
                rows += claimed
        print(
            json.dumps({"batches": batches, "rows": rows, "cpu_s": time.process_time() - cpu}),
            flush=True,
        )


def listener(args: argparse.Namespace) -> None:
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with psycopg.connect(args.url, autocommit=True, application_name=args.app_name) as conn:
            conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(args.channel)))
            deadline = time.monotonic() + args.timeout
            while (left := deadline - time.monotonic()) > 0:
                for _ in conn.notifies(timeout=left):
                    os.write(fd, f"{time.time()!r}\n".encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agents")
    roles = parser.add_subparsers(dest="role", required=True)

    p = roles.add_parser("producer")
    p.add_argument("url")
    p.add_argument("--kind", choices=["address", "recipient"], default="address")
    p.add_argument("--recipients", type=int, default=1)
    p.add_argument("--notify", choices=["on", "off"], default="on")
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--prefix", required=True)
    p.set_defaults(func=producer)

    r = roles.add_parser("raw-loop")
    r.add_argument("url")
    r.add_argument("--batch", type=int, default=100)
    r.add_argument("--timeout", type=float, default=120.0)
    r.add_argument(
        "--shape", choices=["claim-then-done", "one-statement"], default="claim-then-done"
    )
    r.set_defaults(func=raw_loop)

    listen = roles.add_parser("listener")
    listen.add_argument("url")
    listen.add_argument("--channel", default="outbox_work")
    listen.add_argument("--out", required=True)
    listen.add_argument("--timeout", type=float, default=600.0)
    listen.add_argument("--app-name", default="bench-listener")
    listen.set_defaults(func=listener)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
