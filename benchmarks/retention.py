"""Retention: does the cost of a claim grow with the finished history kept?

docs/operations.md (Retention) promises it does not: the claim reads the
partial index of pending rows (``deliveries_due``), so finished rows are never
visited. This measures it.

Two fresh databases: one keeps history, the other is the empty baseline. For
each history size H (default 0, 1M, 5M finished deliveries):

1. the history database is topped up to H, set-based (``INSERT ... SELECT
   generate_series`` in chunks of 250,000, NOTIFY trigger off): one
   notification per delivery, a realistic mix of statuses (90% sent, 4%
   delivered, 3% dead, 2% suppressed, 1% expired) finished 31-60 days ago, and
   ``--events-per-delivery`` audit events each (created, processing, the
   outcome). Then VACUUM ANALYZE and a CHECKPOINT, so every size starts from
   the same steady state. Building is the slow part (5M rows: 5M
   notifications, 5M deliveries, 15M events): it logs its progress after each
   chunk, and stops growing once ``--build-budget`` seconds have gone into it;
   the size then measured is the one reached (the result says so), and larger
   sizes are skipped;
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
The A/A row is not part of it; when the A/A row alone is off by more than the
tolerance, the result says the run was too noisy to tell.

5M rows take ~6 GB on the server (notifications, deliveries, events; plus WAL)
while the benchmark runs; its databases are dropped at the end.

    python -m benchmarks.retention                      # 0, 1M, 5M
    python -m benchmarks.retention --sizes 0,200000 --rounds 3 --json out.json

The setup SQL is the benchmark's (``benchmarks/retention.sql``); the claim and
the record are the product's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from benchmarks.harness import Server, fresh_database, log, md_table, num, sql, standalone
from outbox.sql import query
from outbox.workers import store
from outbox.workers.decide import Decision
from outbox.workers.delivery import TemplateVersions

CHUNK = 250_000  # history rows per INSERT: bounded memory and WAL bursts


# -- building ---------------------------------------------------------------------------------


def grow_history(
    url: str, have: int, want: int, total: int, events_per_delivery: int, deadline: float
) -> int:
    """Add finished rows have+1..want, a chunk at a time, until ``deadline``; the rows now kept."""
    began = time.monotonic()
    with psycopg.connect(url, autocommit=False) as conn:
        first = have + 1
        while first <= want:
            if time.monotonic() > deadline:
                log(
                    f"history: build budget spent; stopping at {first - 1:,} of {want:,} rows "
                    f"(--build-budget)"
                )
                break
            last = min(first + CHUNK - 1, want)
            conn.execute(sql("disable_notify_local"))
            conn.execute(
                sql("retention_history"),
                {"first": first, "last": last, "total": total, "events": events_per_delivery},
            )
            conn.commit()
            first = last + 1
            done, elapsed = last - have, time.monotonic() - began
            rate = done / elapsed
            log(
                f"history: {last:,} of {want:,} rows ({last / want:.0%}) in {elapsed:.0f} s, "
                f"{rate:,.0f} rows/s, ~{(want - last) / rate:.0f} s left"
            )
    return first - 1


def settle(url: str) -> None:
    """VACUUM ANALYZE, then CHECKPOINT if allowed: each size measured from the same steady state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql("retention_vacuum"))
        # CHECKPOINT needs pg_checkpoint (or superuser); without it, autovacuum's state will do.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql("retention_checkpoint"))


def fill_queue(url: str, n: int, prefix: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(sql("disable_notify_local"))
        conn.execute(sql("retention_queue"), {"n": n, "prefix": prefix})


def clean(url: str, floor: int) -> None:
    """Remove every notification above ``floor`` (the rounds' own), then VACUUM ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql("allow_history_delete"))
        conn.execute(sql("retention_clean"), {"floor": floor})
        conn.execute(sql("retention_vacuum"))


def max_notification_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql("retention_max_id")).fetchone()[0]


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return dict(conn.execute(sql("retention_counts")).fetchone())


# -- measuring --------------------------------------------------------------------------------


async def _claimer(url: str, name: str, batch: int, counts: list[int]) -> None:
    """Claim and record batches until a claim finds nothing, as a worker would (minus sending)."""
    conn = await store.connect(url, f"bench-retention {name}")
    templates = TemplateVersions()
    try:
        while True:
            rows = await store.claim(
                conn,
                worker=name,
                channels=["email"],
                limit=batch,
                lease_seconds=60,
                templates=templates,
            )
            if not rows:
                return
            results = [
                (
                    r.id,
                    r.attempts,
                    Decision("sent", "sent", provider="bench", provider_message_id=f"b-{r.id}"),
                    r.template_id,
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
        conn.execute(sql("retention_analyze"))
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


# -- the run ----------------------------------------------------------------------------------


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Each history size in turn: build it, then interleaved rounds against the empty database."""
    sizes = sorted(int(s) for s in args.sizes.split(","))
    result: dict[str, Any] = {
        "settings": {
            "sizes": sizes,
            "queue": args.queue,
            "rounds": args.rounds,
            "claimers": args.claimers,
            "batch": args.batch,
            "events_per_delivery": args.events_per_delivery,
            "tolerance": args.tolerance,
            "build_budget_s": args.build_budget,
        },
        "sizes": [],
    }
    with (
        fresh_database(server, "retention_empty") as empty,
        fresh_database(server, "retention_history") as history,
    ):
        for url in (empty, history):
            with psycopg.connect(url) as conn:
                conn.execute(sql("retention_template"))
        # Rows above a database's floor are the rounds' own: removed before every round,
        # so the empty database is empty and the history database holds exactly H rows.
        floors = {empty: 0, history: 0}
        have = 0
        build_deadline = time.monotonic() + args.build_budget
        for size in sizes:
            clean(history, floors[history])
            began = time.monotonic()
            if size > have:
                have = grow_history(
                    history, have, size, max(sizes), args.events_per_delivery, build_deadline
                )
            built = time.monotonic() - began
            floors[history] = max_notification_id(history)
            settling = time.monotonic()
            log(f"history {have:,}: VACUUM ANALYZE, CHECKPOINT and a warm-up round on both")
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
            log(
                f"history {have:,}: settled in {time.monotonic() - settling:.0f} s; "
                f"{args.rounds} rounds of {args.queue:,} deliveries on each database"
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
                log(
                    f"history {have:,}, round {i + 1}/{args.rounds}: "
                    f"{rates[history][-1]:,.0f}/s vs empty {rates[empty][-1]:,.0f}/s"
                )
            clean(history, floors[history])
            base, med = statistics.median(rates[empty]), statistics.median(rates[history])
            entry = {
                "history": have,
                "requested": size,
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
            result["sizes"].append(entry)
            log(
                f"history {have:,}: {med:,.0f} deliveries/s vs empty {base:,.0f} "
                f"({entry['vs_empty']:+.1%}); built in {built:.0f} s; "
                f"one claim {entry['explain']['execution_ms']:.2f} ms"
            )
            if have < size:
                skipped = [s for s in sizes if s > size]
                result["skipped"] = skipped
                if skipped:
                    log(f"build budget spent: sizes {', '.join(map(str, skipped))} not measured")
                break
    # The A/A row (no history) measures the noise, not the claim: it is no part of the
    # verdict, but if it alone is off by more than the tolerance, the verdict is noise too.
    result["passed"] = all(e["within_tolerance"] for e in result["sizes"] if e["history"] > 0)
    result["noise"] = max(
        (abs(e["vs_empty"]) for e in result["sizes"] if e["history"] == 0), default=None
    )
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = []
    for e in result["sizes"]:
        kept = num(e["history"])
        if e.get("requested", e["history"]) > e["history"]:
            kept += f" (of {num(e['requested'])} asked: build budget spent)"
        elif e["history"] == 0:
            kept += " (A/A)"
        rows.append(
            (
                kept,
                num(e["table"]["events"]),
                f"{e['build_seconds']:.0f}",
                num(e["median_per_second"]),
                num(e["empty_median_per_second"]),
                f"**{e['vs_empty']:+.1%}**"
                + ("" if e["within_tolerance"] or e["history"] == 0 else " ❌"),
                f"{e['explain']['execution_ms']:.2f}",
                "<br>".join(f"`{line.strip()}`" for line in e["explain"]["deliveries_nodes"][:2]),
            )
        )
    tolerance = s["tolerance"]
    verdict = (
        f"**Pass**: with every history size, claims are within {tolerance:.0%} of an empty "
        f"table (or faster)."
        if result["passed"]
        else f"**Fail**: with some history size, claims are more than {tolerance:.0%} slower "
        f"than an empty table."
    )
    noise = result.get("noise")
    if noise is not None and noise > tolerance:
        verdict += (
            f" But the A/A row (no history on either side) is itself {noise:.0%} off: this "
            f"run was too noisy to tell (more rounds, or a quieter machine)."
        )
    parts = [
        f"Claim + record throughput (the worker's own statements, {s['claimers']} claim loops, "
        f"batches of {s['batch']}, {num(s['queue'])} deliveries a round) with finished history "
        f"kept ({s['events_per_delivery']} events per delivery) vs an empty database; "
        f"{s['rounds']} rounds alternating between the two, medians. Each row compares with "
        f"its own empty column only: the level drifts between sizes.",
        md_table(
            [
                "finished rows kept",
                "events kept",
                "build s",
                "claim+record /s",
                "empty table /s",
                "vs empty",
                "one claim ms",
                "claim plan on deliveries",
            ],
            rows,
        ),
        verdict,
    ]
    if result.get("skipped"):
        parts.append(
            f"Not measured: {', '.join(num(x) for x in result['skipped'])} rows — building the "
            f"history took longer than the {s['build_budget_s']:g} s budget (`--build-budget`)."
        )
    return "\n\n".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", default="0,1000000,5000000", help="history sizes (finished deliveries)"
    )
    parser.add_argument(
        "--queue", type=int, default=20_000, help="pending deliveries drained per round"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size (medians)")
    parser.add_argument(
        "--claimers", type=int, default=2, help="concurrent claim loops (connections)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="claim batch size (the worker default)"
    )
    parser.add_argument("--events-per-delivery", type=int, default=3, choices=(1, 2, 3, 4))
    parser.add_argument(
        "--tolerance", type=float, default=0.10, help="slowdown vs empty that still passes"
    )
    parser.add_argument(
        "--build-budget",
        type=float,
        default=600.0,
        help="seconds of history building, all sizes together; then it stops growing "
        "(checked between chunks of 250,000 rows). The default keeps a full "
        "`python -m benchmarks` within ~25 minutes per server on 2 cores",
    )


def main(argv: list[str] | None = None) -> None:
    standalone("retention", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
