"""Broadcast throughput: one ``outbox.broadcast`` to a topic of N subscribers.

On a fresh database of its own (N recipients, each with an email address and a
phone number, all subscribed to one topic; a template for both channels, so
every recipient gets two deliveries), in R rounds, each running in turn:

* **broadcast** — ``outbox.broadcast(message_id, 'all', 'bench')``: one
  statement, then COMMIT;
* **enqueue_items** — the same N notifications through the set-based enqueue
  core (``outbox.enqueue_items``, what ``enqueue_many`` runs on), one item each;
* **plain INSERT** — one row per destination into a one-table outbox
  (``bench_plain_outbox``): the reference.

and then the broadcast again with the same message id (a rerun: every recipient
already covered, nothing written). Reported: deliveries/s of each and the ratio to
the plain INSERT. The order rotates between rounds so that the tables' growth
and the machine's drift hit every variant alike. Not part of ``python -m
benchmarks`` (yet): run it alone,

    python -m benchmarks.broadcast [--subscribers 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg

import outbox
from benchmarks.harness import Server, fresh_database, log, md_table, median, num, sql, standalone

VARIANTS = ("broadcast", "enqueue_items", "plain INSERT")
_QUERY = {
    "broadcast": "broadcast_topic_run",
    "enqueue_items": "broadcast_core_run",
    "plain INSERT": "broadcast_plain_run",
}


def setup(conn: psycopg.Connection[Any], n: int) -> None:
    outbox.create_template(conn, "bench", "email", "Hello", subject="Hello")
    outbox.create_template(conn, "bench", "sms", "Hello")
    outbox.create_topic(conn, "all")
    conn.execute(sql("broadcast_setup"), {"n": n})
    conn.execute(sql("broadcast_plain_table"))
    conn.commit()


def timed(conn: psycopg.Connection[Any], variant: str, message_id: str) -> float:
    started = time.perf_counter()
    conn.execute(sql(_QUERY[variant]), {"message_id": message_id})
    conn.commit()
    return time.perf_counter() - started


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    n = args.subscribers
    deliveries = 2 * n
    times: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "broadcast rerun")}
    with fresh_database(server, "broadcast") as url, psycopg.connect(url) as conn:
        log(f"setting up {n} subscribers (email and phone each)")
        setup(conn, n)
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        conn.autocommit = False
        for r in range(args.rounds):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for variant in order:
                seconds = timed(conn, variant, f"{variant.split()[0]}-{r}")
                times[variant].append(seconds)
                log(f"round {r + 1}: {variant}: {num(deliveries / seconds)} deliveries/s")
            seconds = timed(conn, "broadcast", f"broadcast-{r}")
            times["broadcast rerun"].append(seconds)
            log(f"round {r + 1}: broadcast rerun: {num(n / seconds)} recipients/s")
    plain = median(times["plain INSERT"])
    rows = []
    for variant, runs in times.items():
        seconds = median(runs)
        rows.append(
            {
                "variant": variant,
                "seconds": seconds,
                "runs": runs,
                "deliveries_per_s": 0 if variant == "broadcast rerun" else deliveries / seconds,
                "recipients_per_s": n / seconds,
                "ratio_to_plain": plain / seconds,
            }
        )
    return {"settings": {"subscribers": n, "rounds": args.rounds}, "variants": rows}


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    return (
        f"**Broadcast to {num(s['subscribers'])} subscribers** (2 deliveries each; median of "
        f"{s['rounds']} rounds, one statement + COMMIT each)\n\n"
        + md_table(
            ["variant", "seconds", "deliveries/s", "recipients/s", "speed vs plain INSERT"],
            [
                (
                    r["variant"],
                    f"{r['seconds']:.2f}",
                    num(r["deliveries_per_s"]) if r["deliveries_per_s"] else "(writes none)",
                    num(r["recipients_per_s"]),
                    f"{r['ratio_to_plain']:.2f}",
                )
                for r in result["variants"]
            ],
        )
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=100_000, help="subscribers of the topic")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every variant")


def main(argv: list[str] | None = None) -> None:
    standalone("broadcast", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
