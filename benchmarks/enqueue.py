"""Enqueue throughput: what a producer pays to enqueue inside its own transaction.

On a fresh database of its own (templates for every channel, R recipients each
with an email address, a phone number and two push devices):

1. single — one notification per transaction (one statement, then COMMIT),
   three ways, interleaved in rounds so that drift on a shared machine hits
   all three alike:
     * plain INSERT of one row into ``bench.plain_outbox`` (a one-table,
       hand-rolled outbox with the same kind of columns and partial index):
       the baseline;
     * ``outbox.enqueue`` to a direct address (one email delivery);
     * ``outbox.enqueue`` to a realistic recipient (email + SMS + 2 push
       devices: four deliveries).
   Reported: transactions/s, deliveries/s, and the ratio to the plain INSERT.
2. bulk — interleaved in rounds: a plain COPY of B rows per transaction into
   ``bench.plain_outbox`` (the reference), ``outbox.enqueue_many`` with B
   notifications per call (one round trip) and per transaction, and
   ``outbox.enqueue_stream`` (COPY into a staging table, the set-based core per
   chunk of B; one transaction per round), to direct addresses and to realistic
   recipients: notifications/s, deliveries/s and the ratio to COPY; R rounds on
   emptied tables, each followed by PgQueuer's and procrastinate's own batch
   enqueue of as many jobs, B per transaction (benchmarks/peers.py, each in its
   own database).
3. concurrent — P producer processes, each doing one ``outbox.enqueue`` (direct
   address) per transaction for D seconds, with the NOTIFY trigger on and off
   (``SET outbox.notify = 'off'``), alternating in rounds. A bare LISTEN
   connection is attached throughout, as an idle worker would be.
   Reported: commits/s each way and what the NOTIFY costs.

Wall-clock time is measured by the producer (perf_counter around the loop);
every commit is a durable commit with the server's own settings.

    python -m benchmarks.enqueue [--single 3000] [--bulk 20000] [--batch 1000]
                                 [--producers 4] [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

import outbox
from benchmarks import peers
from benchmarks.harness import (
    Processes,
    Server,
    agent_command,
    fresh_database,
    log,
    md_table,
    num,
    sql,
    standalone,
    wait_sessions,
)

TEMPLATE = "bench"
# Untimed transactions before timing starts: imports, plan caches, prepared statements.
WARMUP = 50
# Seconds between starting the producer processes and their common start time:
# enough to import, connect and warm up on a busy 2-core machine.
START_DELAY = 4.0
SINGLE_VARIANTS = (
    ("plain", "plain INSERT, 1 row (baseline)"),
    ("address", "outbox.enqueue, direct address (1 delivery)"),
    ("recipient", "outbox.enqueue, recipient with email+phone+2 devices (4 deliveries)"),
)


def setup(conn: psycopg.Connection, recipients: int) -> None:
    """Templates for every channel, the baseline tables, and realistic recipients."""
    outbox.create_template(
        conn,
        TEMPLATE,
        "email",
        "Hello {{ n }}",
        subject="Note {{ n }}",
        html_body="<p>Hello {{ n }}</p>",
    )
    outbox.create_template(conn, TEMPLATE, "sms", "Hello {{ n }}")
    outbox.create_template(conn, TEMPLATE, "push", "Hello {{ n }}", title="Note")
    conn.execute(sql("create_baselines"))
    for i in range(recipients):
        outbox.upsert_recipient(
            conn, f"user-{i}", email=f"user-{i}@example.com", phone=f"+1415{i:07d}", locale="en"
        )
        outbox.register_device(conn, f"user-{i}", f"apns-{i:08d}-benchmark-token", "apns")
        outbox.register_device(conn, f"user-{i}", f"fcm-{i:08d}-benchmark-token", "fcm")
    conn.commit()


def _deliveries(conn: psycopg.Connection) -> int:
    n = conn.execute(sql("count_deliveries")).fetchone()[0]
    conn.commit()
    return n


def _one(conn: psycopg.Connection, kind: str, message_id: str, i: int, recipients: int) -> None:
    if kind == "plain":
        conn.execute(
            sql("plain_insert"),
            {
                "message_id": message_id,
                "address": f"user{i}@example.com",
                "template": TEMPLATE,
                "data": json.dumps({"n": i}),
            },
        )
    elif kind == "address":
        outbox.enqueue(
            conn, message_id, address=f"user{i}@example.com", template=TEMPLATE, data={"n": i}
        )
    else:
        outbox.enqueue(
            conn, message_id, recipient=f"user-{i % recipients}", template=TEMPLATE, data={"n": i}
        )


def single(
    conn: psycopg.Connection, *, n: int, rounds: int, recipients: int
) -> list[dict[str, Any]]:
    """One notification per transaction, each variant n times, interleaved in ``rounds``."""
    totals = {
        kind: {"transactions": 0, "seconds": 0.0, "deliveries": 0} for kind, _ in SINGLE_VARIANTS
    }
    per_round = max(1, n // rounds)
    for kind, _ in SINGLE_VARIANTS:
        for i in range(WARMUP):
            _one(conn, kind, f"warmup-{kind}-{i}", i, recipients)
            conn.commit()
    for r in range(rounds):
        for kind, _ in SINGLE_VARIANTS:
            before = _deliveries(conn)
            started = time.perf_counter()
            for i in range(per_round):
                _one(conn, kind, f"single-{kind}-{r}-{i}", i, recipients)
                conn.commit()
            elapsed = time.perf_counter() - started
            t = totals[kind]
            t["transactions"] += per_round
            t["seconds"] += elapsed
            t["deliveries"] += _deliveries(conn) - before if kind != "plain" else per_round
            log(f"single {kind} round {r + 1}/{rounds}: {per_round / elapsed:,.0f} tx/s")
    plain_rate = totals["plain"]["transactions"] / totals["plain"]["seconds"]
    out = []
    for kind, label in SINGLE_VARIANTS:
        t = totals[kind]
        rate = t["transactions"] / t["seconds"]
        out.append(
            {
                "variant": kind,
                "label": label,
                **t,
                "tx_per_s": rate,
                "deliveries_per_s": t["deliveries"] / t["seconds"],
                "deliveries_per_tx": t["deliveries"] / t["transactions"],
                "ratio_to_plain": rate / plain_rate,
            }
        )
    return out


# The Outbox bulk path set beside the peers' batch enqueue: the streaming one.
PEER_COMPARED = "stream-address"
BULK_VARIANTS = (
    ("copy", "address", "plain COPY into bench.plain_outbox (the reference)"),
    ("many", "address", "enqueue_many, direct addresses (1 delivery each)"),
    ("stream", "address", "enqueue_stream, direct addresses (1 delivery each)"),
    ("many", "recipient", "enqueue_many, recipients with email+phone+2 devices (4 deliveries)"),
    ("stream", "recipient", "enqueue_stream, recipients with email+phone+2 devices (4 deliveries)"),
)


def _bulk_items(
    kind: str, prefix: str, start: int, stop: int, recipients: int
) -> Iterator[dict[str, Any]]:
    for i in range(start, stop):
        item: dict[str, Any] = {
            "message_id": f"{prefix}-{i}",
            "template": TEMPLATE,
            "data": {"n": i},
        }
        if kind == "address":
            item["address"] = f"user{i}@example.com"
        else:
            item["recipient"] = f"user-{i % recipients}"
        yield item


def _bulk_round(
    conn: psycopg.Connection,
    way: str,
    kind: str,
    prefix: str,
    total: int,
    batch: int,
    recipients: int,
) -> None:
    """``total`` notifications one way: ``batch`` per transaction (copy, many) or one
    stream of them all in one transaction, ``batch`` per chunk."""
    if way == "stream":
        outbox.enqueue_stream(
            conn, _bulk_items(kind, prefix, 0, total, recipients), chunk_size=batch
        )
        conn.commit()
        return
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        if way == "copy":
            with conn.cursor() as cur, cur.copy(sql("plain_copy")) as copy:
                for i in range(start, stop):
                    copy.write_row(
                        (
                            f"{prefix}-{i}",
                            "email",
                            f"user{i}@example.com",
                            TEMPLATE,
                            json.dumps({"n": i}),
                        )
                    )
        else:
            outbox.enqueue_many(conn, list(_bulk_items(kind, prefix, start, stop, recipients)))
        conn.commit()


def bulk(
    conn: psycopg.Connection, *, n: int, batch: int, rounds: int, recipients: int
) -> list[dict[str, Any]]:
    """Bulk enqueue, ``n`` deliveries per variant, interleaved in ``rounds``: a plain
    COPY (the reference), enqueue_many (``batch`` per call and transaction) and
    enqueue_stream (one transaction per round, ``batch`` per chunk), to direct
    addresses and to realistic recipients (four deliveries each: a quarter as many
    notifications)."""
    totals = {
        (way, kind): {"notifications": 0, "deliveries": 0, "seconds": 0.0, "runs": []}
        for way, kind, _ in BULK_VARIANTS
    }
    for way, kind, _ in BULK_VARIANTS:
        _bulk_round(conn, way, kind, f"bulk-warmup-{way}-{kind}", batch, batch, recipients)
    for r in range(rounds):
        for way, kind, _ in BULK_VARIANTS:
            total = max(batch, n // rounds // (4 if kind == "recipient" else 1))
            before = _deliveries(conn)
            started = time.perf_counter()
            _bulk_round(conn, way, kind, f"bulk-{way}-{kind}-{r}", total, batch, recipients)
            elapsed = time.perf_counter() - started
            deliveries = total if way == "copy" else _deliveries(conn) - before
            t = totals[(way, kind)]
            t["notifications"] += total
            t["deliveries"] += deliveries
            t["seconds"] += elapsed
            t["runs"].append(deliveries / elapsed)
            log(
                f"bulk {way} {kind} round {r + 1}/{rounds}: "
                f"{deliveries / elapsed:,.0f} deliveries/s"
            )
    copy = totals[("copy", "address")]
    copy_rate = copy["deliveries"] / copy["seconds"]
    out = []
    for way, kind, label in BULK_VARIANTS:
        t = totals[(way, kind)]
        rate = t["deliveries"] / t["seconds"]
        out.append(
            {
                "variant": f"{way}-{kind}",
                "way": way,
                "kind": kind,
                "label": label,
                **t,
                "batch": batch,
                "notifications_per_s": t["notifications"] / t["seconds"],
                "deliveries_per_s": rate,
                "ratio_to_copy": rate / copy_rate,
            }
        )
    return out


def bulk_round(conn: psycopg.Connection, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The bulk section once, on emptied tables: peers.bulk_rounds alternates it with the peers'."""
    conn.execute(sql("outbox_reset"))
    conn.execute(sql("plain_reset"))
    conn.commit()
    return bulk(conn, n=args.bulk, batch=args.batch, rounds=1, recipients=args.recipients)


def concurrent(
    url: str, *, producers: int, duration: float, rounds: int, kind: str, recipients: int
) -> dict[str, Any]:
    """``producers`` processes enqueueing for ``duration`` s, NOTIFY on vs off, ``rounds`` each."""
    totals = {mode: {"commits": 0, "seconds": 0.0, "runs": []} for mode in ("on", "off")}
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp, Processes(Path(tmp)) as procs:
        received = Path(tmp) / "notifications.txt"
        listener = procs.spawn(
            agent_command(
                "listener", url, "--out", received, "--timeout", (duration + 30) * rounds * 2 + 60
            ),
            name="listener",
        )
        wait_sessions(url, "bench-listener", 1, procs=[listener], owner=procs)
        for r in range(rounds):
            for mode in ("on", "off"):
                start_at = time.time() + START_DELAY
                children = [
                    procs.spawn(
                        agent_command(
                            "producer",
                            url,
                            "--kind",
                            kind,
                            "--recipients",
                            recipients,
                            "--notify",
                            mode,
                            "--start-at",
                            start_at,
                            "--duration",
                            duration,
                            "--prefix",
                            f"c-{mode}-{r}-{p}",
                        ),
                        name=f"producer-{mode}",
                    )
                    for p in range(producers)
                ]
                commits = 0
                for child in children:
                    try:
                        code = child.wait(duration + 60)
                    except Exception:
                        procs.stop(child)
                        raise
                    text = procs.output(child)
                    if code != 0:
                        raise RuntimeError(f"producer exited with {code}:\n{text[-2000:]}")
                    report = json.loads(text.strip().splitlines()[-1])
                    if report["late"] > 0.05:
                        log(f"warning: a producer started {report['late']:.2f}s late")
                    commits += report["commits"]
                totals[mode]["commits"] += commits
                totals[mode]["seconds"] += duration
                totals[mode]["runs"].append(commits / duration)
                log(
                    f"concurrent notify={mode} round {r + 1}/{rounds}: "
                    f"{commits / duration:,.0f} commits/s"
                )
        time.sleep(0.2)
        notifications = len(received.read_text().splitlines()) if received.exists() else 0
    on = totals["on"]["commits"] / totals["on"]["seconds"]
    off = totals["off"]["commits"] / totals["off"]["seconds"]
    return {
        "producers": producers,
        "duration": duration,
        "rounds": rounds,
        "kind": kind,
        "commits_per_s_notify_on": on,
        "commits_per_s_notify_off": off,
        "runs_notify_on": totals["on"]["runs"],
        "runs_notify_off": totals["off"]["runs"],
        "notify_cost": 1 - on / off,
        "notifications_received": notifications,
        "commits_notify_on": totals["on"]["commits"],
    }


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """All three parts on one fresh database; the results as a dict."""
    with fresh_database(server, "enqueue") as url:
        with psycopg.connect(url) as conn:
            log(f"setting up {args.recipients} recipients (email, phone, 2 devices each)")
            setup(conn, args.recipients)
            result: dict[str, Any] = {
                "settings": {
                    "single_transactions": args.single,
                    "rounds": args.rounds,
                    "bulk_deliveries": args.bulk,
                    "batch": args.batch,
                    "recipients": args.recipients,
                    "producers": args.producers,
                    "duration_s": args.duration,
                    "concurrent_kind": args.concurrent_kind,
                }
            }
            result["single"] = single(
                conn, n=args.single, rounds=args.rounds, recipients=args.recipients
            )
            result["bulk"], result["bulk_peers"] = peers.bulk_rounds(
                server,
                lambda: bulk_round(conn, args),
                rounds=args.rounds,
                n=args.bulk,
                batch=args.batch,
                compare=PEER_COMPARED,
            )
            copy = next(v for v in result["bulk"] if v["variant"] == "copy-address")
            for v in result["bulk"]:
                v["ratio_to_copy"] = v["deliveries_per_s"] / copy["deliveries_per_s"]
        result["concurrent"] = concurrent(
            url,
            producers=args.producers,
            duration=args.duration,
            rounds=args.rounds,
            kind=args.concurrent_kind,
            recipients=args.recipients,
        )
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    single_rows = [
        (r["label"], num(r["tx_per_s"]), num(r["deliveries_per_s"]), f"{r['ratio_to_plain']:.2f}")
        for r in result["single"]
    ]
    bulk_rows = [
        (
            r.get("label", r["variant"]),  # results from before the COPY reference: no label
            num(r["notifications"]),
            num(r["notifications_per_s"]),
            num(r["deliveries_per_s"]),
            f"{r['ratio_to_copy']:.2f}" if "ratio_to_copy" in r else "–",
        )
        for r in result["bulk"]
    ]
    c = result["concurrent"]
    kind = "direct address" if c["kind"] == "address" else "recipient with email+phone+2 devices"
    return "\n\n".join(
        [
            f"**Single enqueue per transaction** ({num(s['single_transactions'])} transactions per "
            f"variant in {s['rounds']} interleaved rounds; one statement + COMMIT each)",
            md_table(
                ["variant", "transactions/s", "deliveries/s", "ratio to plain INSERT"], single_rows
            ),
            f"**Bulk enqueue** ({num(s['bulk_deliveries'])} deliveries per variant in "
            f"{s['rounds']} interleaved rounds; COPY and `enqueue_many` {s['batch']} "
            f"notifications per "
            f"transaction, `enqueue_stream` one transaction per round in chunks of {s['batch']})",
            md_table(
                ["variant", "notifications", "notifications/s", "deliveries/s", "ratio to COPY"],
                bulk_rows,
            ),
            *([peers.bulk_markdown(result["bulk_peers"])] if "bulk_peers" in result else []),
            f"**{c['producers']} concurrent producer processes** (one `enqueue` per transaction, "
            f"{kind}; {c['rounds']} rounds of {c['duration']:g} s per mode, alternating; "
            f"a LISTEN connection attached throughout)",
            md_table(
                ["NOTIFY trigger", "commits/s (all producers)", "per round"],
                [
                    (
                        "on (default)",
                        num(c["commits_per_s_notify_on"]),
                        ", ".join(num(x) for x in c["runs_notify_on"]),
                    ),
                    (
                        "off (`SET outbox.notify = 'off'`)",
                        num(c["commits_per_s_notify_off"]),
                        ", ".join(num(x) for x in c["runs_notify_off"]),
                    ),
                ],
            ),
            f"Cost of the NOTIFY with {c['producers']} producers: {100 * c['notify_cost']:.1f}% "
            f"of commit throughput (negative = within noise). The listener received "
            f"{num(c['notifications_received'])} "
            f"notifications for {num(c['commits_notify_on'])} notifying commits.",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--single", type=int, default=3000, help="transactions per single-enqueue variant"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds (single, bulk next to the peers, and concurrent)",
    )
    parser.add_argument("--bulk", type=int, default=20000, help="deliveries per bulk variant")
    parser.add_argument(
        "--batch",
        type=int,
        default=1000,
        help="notifications per COPY / enqueue_many transaction and per stream chunk "
        "(and jobs per peer batch; issue 13 states 1000)",
    )
    parser.add_argument(
        "--recipients", type=int, default=500, help="realistic recipients to create"
    )
    parser.add_argument("--producers", type=int, default=4, help="concurrent producer processes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per concurrent run")
    parser.add_argument(
        "--concurrent-kind",
        choices=["address", "recipient"],
        default="address",
        help="what the concurrent producers enqueue to",
    )


def main(argv: list[str] | None = None) -> None:
    standalone("enqueue", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
