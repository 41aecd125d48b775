"""Retention: does the cost of a claim grow with the finished history kept?

DESIGN.md promises it does not: the claim reads the partial index of pending
rows (``deliveries_due``), so finished rows are never visited. This measures it.

Two fresh databases (created, migrated and dropped by the benchmark): one
keeps history, the other is the empty baseline. For each history size H
(default 0, 1M, 5M finished deliveries):

1. the history database is topped up to H, set-based (``INSERT ... SELECT
   generate_series``, NOTIFY trigger off): one notification per delivery, a
   realistic mix of statuses (90% sent, 4% delivered, 3% dead, 2% suppressed,
   1% expired) finished 31-60 days ago, and ``--events-per-delivery`` audit
   events each (created, processing, the outcome). Then VACUUM ANALYZE and a
   CHECKPOINT, so every size starts from the same steady state;
2. ``--rounds`` times, on both databases, in alternating order: the previous
   rounds' rows are deleted (everything above the history) and the tables
   vacuumed, the same on both, so the empty database is empty and the history
   database holds exactly H rows; then ``--queue`` pending email deliveries are
   inserted, and ``--claimers`` concurrent loops drain them with the worker's
   own statements (``workers.store.claim`` then ``workers.store.record`` of a
   ``sent`` result, batch ``--batch``): exactly the SQL a worker runs, without
   provider calls. Throughput = deliveries claimed and recorded / wall time.
   Interleaving makes whatever else the server is doing weigh on both alike;
   H = 0 is an A/A run that shows what is left of the noise;
3. EXPLAIN (ANALYZE, BUFFERS) of one claim, in a transaction rolled back: the
   plan and the buffers it touched, to show why the numbers are what they are.

The verdict compares each size's median throughput with the empty table's
median of the same rounds: no more than ``--tolerance`` (10%) slower passes.

    python -m benchmarks.retention                      # 0, 1M, 5M
    python -m benchmarks.retention --sizes 0,200000 --rounds 3 --json out.json

The setup SQL is kept here by name (the SQL constants below): it is the
benchmark's, not the product's; the claim and record are the product's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from benchmarks.harness import fresh_database, machine, open_server
from outbox.sql import query
from workers import store
from workers.decide import Decision

# -- the benchmark's SQL, by name ---------------------------------------------------------

# A template every benchmark notification renders with (not rendered here, but
# the claim resolves it, as for real).
SQL_TEMPLATE = """
SELECT outbox.create_template(key => 'bench', channel => 'email', body => 'Hello {{ n }}',
                              subject => 'Bench', activate => true)
"""

# Finished history rows %(first)s..%(last)s: notification + delivery + %(events)s events
# each (created, processing, the outcome, delivered), set-based.
# Ids grow with time, as in production: history is older than anything queued later.
SQL_HISTORY = """
WITH n AS (
    INSERT INTO outbox.notifications (message_id, address, template_key, data, channels, created_at)
    SELECT 'hist-' || g, 'user' || g || '@example.com', 'bench', jsonb_build_object('n', g),
           ARRAY['email']::outbox.channel[],
           now() - interval '60 days' + (g::float8 / %(total)s) * interval '29 days'
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    RETURNING id, address, created_at
), d AS (
    INSERT INTO outbox.deliveries
        (notification_id, channel, destination, status, attempts, max_attempts, provider,
         provider_message_id, last_error, created_at, updated_at, sent_at, delivered_at,
         finished_at,
         next_attempt_at)
    SELECT n.id, 'email', n.address, s.status::outbox.delivery_status, s.attempts, 8,
           'sendgrid', CASE WHEN s.status IN ('sent', 'delivered') THEN 'sg-' || n.id END,
           s.error, n.created_at, n.created_at + interval '2 seconds',
           CASE WHEN s.status IN ('sent', 'delivered') THEN n.created_at + interval '1 second' END,
           CASE WHEN s.status = 'delivered' THEN n.created_at + interval '5 seconds' END,
           n.created_at + interval '2 seconds', n.created_at
    FROM n
    CROSS JOIN LATERAL (
        SELECT CASE WHEN k < 90 THEN 'sent' WHEN k < 94 THEN 'delivered' WHEN k < 97 THEN 'dead'
                    WHEN k < 99 THEN 'suppressed' ELSE 'expired' END AS status,
               CASE WHEN k BETWEEN 94 AND 96 THEN 8 WHEN k >= 97 AND k < 99 THEN 0 ELSE 1 END
                   AS attempts,
               CASE WHEN k BETWEEN 94 AND 96 THEN 'sendgrid: 550 mailbox unavailable'
                    WHEN k BETWEEN 97 AND 98 THEN 'opted out of email'
                    WHEN k = 99 THEN 'expired before it could be sent' END AS error
        FROM (SELECT (n.id %% 100)::int AS k) AS kk
    ) s
    RETURNING id, notification_id, created_at, status
)
INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, created_at)
SELECT d.notification_id, d.id, e.kind, e.attempt, 'bench', d.created_at + e.after
FROM d
CROSS JOIN LATERAL (
    VALUES (1, 'created', 0, interval '0'),
           (2, 'processing', 1, interval '1 second'),
           (3, CASE d.status WHEN 'delivered' THEN 'sent' ELSE d.status::text END, 1,
               interval '2 seconds'),
           (4, 'delivered', 1, interval '5 seconds')
) AS e(ord, kind, attempt, after)
WHERE e.ord <= %(events)s AND (e.ord < 4 OR d.status = 'delivered')
"""

# %(n)s pending email deliveries to drain in one round, as enqueue leaves them.
SQL_QUEUE = """
WITH n AS (
    INSERT INTO outbox.notifications (message_id, address, template_key, data, channels)
    SELECT %(prefix)s || g, 'queued' || g || '@example.com', 'bench', jsonb_build_object('n', g),
           ARRAY['email']::outbox.channel[]
    FROM generate_series(1, %(n)s) AS g
    RETURNING id, address
), d AS (
    INSERT INTO outbox.deliveries (notification_id, channel, destination, max_attempts)
    SELECT n.id, 'email', n.address, 8 FROM n
    RETURNING id, notification_id
)
INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt)
SELECT d.notification_id, d.id, 'created', 0 FROM d
"""

SQL_NOTIFY_OFF = "SET LOCAL outbox.notify = 'off'"
SQL_COUNTS = """
SELECT (SELECT count(*) FROM outbox.deliveries) AS deliveries,
       (SELECT count(*) FROM outbox.deliveries
        WHERE status NOT IN ('pending', 'processing')) AS finished,
       (SELECT count(*) FROM outbox.events) AS events,
       pg_total_relation_size('outbox.deliveries') AS deliveries_bytes,
       pg_total_relation_size('outbox.events') AS events_bytes
"""
# The rounds' rows (ids above the history's): deliveries go by the foreign key's cascade.
SQL_CLEAN = """
WITH gone AS (DELETE FROM outbox.notifications n WHERE n.id > %(floor)s RETURNING n.id)
DELETE FROM outbox.events e USING gone g WHERE e.notification_id = g.id
"""
SQL_MAX_ID = "SELECT coalesce(max(id), 0) FROM outbox.notifications"
SQL_VACUUM = "VACUUM (ANALYZE) outbox.notifications, outbox.deliveries, outbox.events"
SQL_CHECKPOINT = "CHECKPOINT"

CHUNK = 250_000  # history rows per INSERT: bounded memory and WAL bursts


# -- building ---------------------------------------------------------------------------------


def grow_history(url: str, have: int, want: int, total: int, events_per_delivery: int) -> float:
    """Add finished rows have+1..want; seconds it took."""
    began = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        first = have + 1
        while first <= want:
            last = min(first + CHUNK - 1, want)
            conn.execute(SQL_NOTIFY_OFF)
            conn.execute(
                SQL_HISTORY,
                {"first": first, "last": last, "total": total, "events": events_per_delivery},
            )
            conn.commit()
            first = last + 1
    return time.perf_counter() - began


def settle(url: str) -> None:
    """VACUUM ANALYZE, then CHECKPOINT if allowed: each size measured from the same steady state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL_VACUUM)
        # CHECKPOINT needs pg_checkpoint (or superuser); without it, autovacuum's state will do.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute(SQL_CHECKPOINT)


def fill_queue(url: str, n: int, prefix: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(SQL_NOTIFY_OFF)
        conn.execute(SQL_QUEUE, {"n": n, "prefix": prefix})


# -- measuring --------------------------------------------------------------------------------


async def _claimer(url: str, name: str, batch: int, counts: list[int]) -> None:
    """Claim and record batches until a claim finds nothing, as a worker would (minus sending)."""
    conn = await store.connect(url, f"bench-retention {name}")
    try:
        while True:
            rows = await store.claim(
                conn, worker=name, channels=["email"], limit=batch, lease_seconds=60
            )
            if not rows:
                return
            results = [
                (
                    r["id"],
                    r["attempts"],
                    Decision("sent", "sent", provider="bench", provider_message_id=f"b-{r['id']}"),
                    r["template_id"],
                )
                for r in rows
            ]
            recorded = await store.record(conn, worker=name, results=results)
            counts.append(len(recorded))
    finally:
        await conn.close()


async def _drain(url: str, claimers: int, batch: int) -> tuple[int, float]:
    counts: list[int] = []
    began = time.perf_counter()
    await asyncio.gather(*(_claimer(url, f"bench-{i}", batch, counts) for i in range(claimers)))
    return sum(counts), time.perf_counter() - began


def measure(url: str, *, queue: int, claimers: int, batch: int, tag: str) -> dict[str, float]:
    fill_queue(url, queue, f"q-{tag}-")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE outbox.deliveries")  # the fresh pending rows, as autovacuum would
    done, seconds = asyncio.run(_drain(url, claimers, batch))
    if done != queue:
        raise RuntimeError(f"drained {done} of {queue} queued deliveries")
    return {"deliveries": done, "seconds": seconds, "per_second": done / seconds}


def explain_claim(url: str, tag: str, batch: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one claim of ``batch`` over a fresh queue, rolled back."""
    fill_queue(url, batch * 2, f"x-{tag}-")
    with psycopg.connect(url, row_factory=dict_row) as conn:
        params = {
            "worker": "bench-explain",
            "channels": ["email"],
            "limit": batch,
            "lease_seconds": 60,
        }
        plan = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query("claim"), params
        ).fetchone()
        conn.rollback()
    doc = plan["QUERY PLAN"][0]
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        if node.get("Relation Name") == "deliveries" or "Index Name" in node:
            lines.append(
                f"{'  ' * depth}{node['Node Type']}"
                f"{' using ' + node['Index Name'] if 'Index Name' in node else ''}"
                f" on {node.get('Relation Name', '?')}: rows={node.get('Actual Rows')} "
                f"shared hit={node.get('Shared Hit Blocks')} read={node.get('Shared Read Blocks')}"
            )
        for child in node.get("Plans", []):
            walk(child, depth + 1)

    walk(doc["Plan"], 0)
    # The explained claim was rolled back: drain its queue so the next round starts empty.
    asyncio.run(_drain(url, 1, batch * 2))
    return {
        "execution_ms": doc["Execution Time"],
        "planning_ms": doc["Planning Time"],
        "shared_hit": doc["Plan"].get("Shared Hit Blocks"),
        "shared_read": doc["Plan"].get("Shared Read Blocks"),
        "deliveries_nodes": lines,
    }


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return dict(conn.execute(SQL_COUNTS).fetchone())


# -- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    report: dict[str, Any] = {
        "machine": machine(),
        "params": vars(args) | {"sizes": sizes},
        "sizes": [],
    }
    with (
        open_server(args.target) as server,
        fresh_database(server, "retention_empty") as empty,
        fresh_database(server, "retention_history") as history,
    ):
        report["server"] = server.describe()
        print(f"server: PostgreSQL {server.version} ({server.backend})", flush=True)
        for url in (empty, history):
            with psycopg.connect(url) as conn:
                conn.execute(SQL_TEMPLATE)
        # Rows above a database's floor are the rounds' own: removed before every round,
        # so the empty database is empty and the history database holds exactly H rows.
        floors = {empty: 0, history: 0}
        have = 0
        for size in sizes:
            clean(history, floors[history])
            built = (
                grow_history(history, have, size, max(sizes), args.events_per_delivery)
                if size > have
                else 0.0
            )
            have = max(have, size)
            floors[history] = max_notification_id(history)
            for url in (empty, history):
                settle(url)
                # One untimed round each: plans cached, caches warm, as a running worker has them.
                measure(
                    url,
                    queue=args.batch * args.claimers * 5,
                    claimers=args.claimers,
                    batch=args.batch,
                    tag=f"{size}-warm",
                )
            rates: dict[str, list[float]] = {empty: [], history: []}
            for i in range(args.rounds):
                # Interleaved, and in alternating order, so that whatever else the server
                # is doing weighs on both alike; both get the same cleanup before a round.
                for url in (empty, history) if i % 2 == 0 else (history, empty):
                    clean(url, floors[url])
                    rates[url].append(
                        measure(
                            url,
                            queue=args.queue,
                            claimers=args.claimers,
                            batch=args.batch,
                            tag=f"{size}-{i}",
                        )["per_second"]
                    )
            clean(history, floors[history])
            base, med = statistics.median(rates[empty]), statistics.median(rates[history])
            entry = {
                "history": size,
                "build_seconds": round(built, 1),
                "empty_rates": [round(r) for r in rates[empty]],
                "rates": [round(r) for r in rates[history]],
                "empty_median_per_second": base,
                "median_per_second": med,
                "vs_empty": med / base - 1.0,
                "table": counts(history),
                "explain": explain_claim(history, str(size), args.batch),
            }
            entry["within_tolerance"] = entry["vs_empty"] >= -args.tolerance
            report["sizes"].append(entry)
            print(
                f"history {size:>9,}: {med:8,.0f} deliveries/s vs empty {base:8,.0f} "
                f"({entry['vs_empty']:+.1%}); rounds "
                f"{', '.join(f'{r:,.0f}' for r in rates[history])} vs "
                f"{', '.join(f'{r:,.0f}' for r in rates[empty])}; built in {built:.0f}s; "
                f"one claim {entry['explain']['execution_ms']:.2f} ms",
                flush=True,
            )
    report["passed"] = all(e["within_tolerance"] for e in report["sizes"])
    return report


def clean(url: str, floor: int) -> None:
    """Remove every notification above ``floor`` (the rounds' own), then VACUUM ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL_CLEAN, {"floor": floor})
        conn.execute(SQL_VACUUM)


def max_notification_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(SQL_MAX_ID).fetchone()[0]


def print_summary(report: dict[str, Any], tolerance: float) -> None:
    print()
    print(
        "| finished rows kept | deliveries | events | claim+record /s (median) | empty table /s "
        "| vs empty | claim plan on deliveries |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for e in report["sizes"]:
        plan = "; ".join(line.strip() for line in e["explain"]["deliveries_nodes"][:2])
        print(
            f"| {e['history']:,} | {e['table']['deliveries']:,} | {e['table']['events']:,} "
            f"| {e['median_per_second']:,.0f} | {e['empty_median_per_second']:,.0f} "
            f"| {e['vs_empty']:+.1%} | {plan} |"
        )
    if report["passed"]:
        print(
            f"\nPASS: with every history size, claims are within {tolerance:.0%} "
            "of an empty table (or faster)"
        )
    else:
        print(
            f"\nFAIL: with some history size, claims are more than {tolerance:.0%} "
            "slower than an empty table"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retention", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--sizes", default="0,1000000,5000000", help="History sizes (finished deliveries)."
    )
    parser.add_argument(
        "--queue", type=int, default=20_000, help="Pending deliveries drained per round."
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--claimers", type=int, default=2, help="Concurrent claim loops (connections)."
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="Claim batch size (the worker default)."
    )
    parser.add_argument("--events-per-delivery", type=int, default=3, choices=(1, 2, 3, 4))
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--target", default="configured", help="configured, service or embedded.")
    parser.add_argument(
        "--json", type=Path, help="Also write the full report (plans included) here."
    )
    args = parser.parse_args(argv)
    report = run(args)
    print_summary(report, args.tolerance)
    for e in report["sizes"]:
        print(f"\nclaim plan with {e['history']:,} kept ({e['explain']['execution_ms']:.2f} ms):")
        for line in e["explain"]["deliveries_nodes"]:
            print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
