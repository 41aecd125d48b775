"""Admission cost per delivery: claim + render + gate (opt-outs, rate limits) vs claim alone.

A backlog of SMS deliveries (one per notification, spread over many recipients)
is drained by 1 and then 2 worker *processes*, each running the worker's own
pieces in a tight loop, one batch at a time, with no provider call in between:

* ``claim``: ``store.claim`` (the worker's claim statement) then ``store.record``
  (every delivery recorded sent). The least any worker does per batch.
* ``+render``: the same, plus rendering each delivery's template and checking
  the channel's limits, as ``Worker._attempt`` does.
* ``+render+gate``: the same, plus ``Gate.admit`` once per batch, with a
  per-provider limit (one hot bucket every batch of every worker takes from)
  and a per-recipient SMS limit (one bucket per recipient), both set so high
  that nothing is deferred: the cost of holding the limits, not of waiting.
  Then the same with only one of the two limits: the provider cap alone shows
  what the one bucket every worker shares costs, and whether waiting for its
  lock grows with a second worker.

Reported per variant and process count: median over rounds of the drain rate,
wall time per delivery, worker CPU per delivery, and the mean time of one gate
call (which includes waiting for the hot provider bucket's row lock held by the
other worker: if the bucket were the bottleneck, that time would climb at 2
workers and the rate would stop growing).

Between runs the same backlog is reset to pending (and vacuumed), so every run
sees the same rows. The database is created for the benchmark and dropped at
the end; nothing else is touched.

    python -m benchmarks.gate [--deliveries 10000] [--recipients 1000] [--batch 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# variant -> (render?, the rate-limit scopes configured; None: no gate call at all)
VARIANTS: dict[str, tuple[bool, tuple[str, ...] | None]] = {
    "claim": (False, None),
    "+render": (True, None),
    "+render+gate": (True, ("provider", "recipient")),
    "  provider cap only": (True, ("provider",)),
    "  recipient cap only": (True, ("recipient",)),
}
_SQL = Path(__file__).with_name("gate.sql")


def _sql(name: str) -> str:
    """A named block of benchmarks/gate.sql (``-- name: x`` like sql/queries/*.sql)."""
    text = _SQL.read_text(encoding="utf-8")
    marker = f"-- name: {name}\n"
    start = text.index(marker) + len(marker)
    end = text.find("-- name: ", start)
    return text[start : end if end >= 0 else len(text)].strip()


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


# --- one worker process ----------------------------------------------------------------------


class _Named:
    """The Router only needs a provider's name here: nothing is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel = "*"

    async def aclose(self) -> None:
        return None


async def _drain(url: str, variant: str, worker_id: str, go: Any, batch: int) -> dict[str, Any]:
    from outbox.providers.router import Router
    from outbox.templates import TemplateVersion, check_limits, render
    from workers import store
    from workers.decide import Decision
    from workers.gate import Gate

    conn = await store.connect(url, f"bench-gate {worker_id}")
    router = Router({"bench": _Named("bench")}, {"sms": ["bench"]})  # type: ignore[dict-item]
    rendering, scopes = VARIANTS[variant]
    gate = Gate(lambda: datetime.now(UTC), router) if scopes is not None else None
    sent = Decision("sent", "sent", provider="bench", provider_message_id="bench")
    spent = {"claim": 0.0, "render": 0.0, "gate": 0.0, "record": 0.0}
    deliveries = gate_calls = held = 0
    go.wait()
    cpu0, start = time.process_time(), time.monotonic()
    while True:
        t = time.perf_counter()
        rows = await store.claim(
            conn, worker=worker_id, channels=("sms",), limit=batch, lease_seconds=300
        )
        spent["claim"] += time.perf_counter() - t
        if not rows:
            break
        if rendering:
            t = time.perf_counter()
            for row in rows:
                template = TemplateVersion(
                    id=row["template_id"],
                    key=row["template_key"],
                    channel=row["channel"],
                    locale=row["template_locale"],
                    version=row["template_version"],
                    subject=row["subject"],
                    body=row["body"],
                    html_body=row["html_body"],
                    title=row["title"],
                    content_hash=row["content_hash"],
                )
                check_limits(
                    row["channel"], render(template, row["data"]), row["data"], template=template
                )
            spent["render"] += time.perf_counter() - t
        decisions: dict[int, Decision] = {}
        if gate is not None:
            t = time.perf_counter()
            decisions = await gate.admit(conn, rows)
            spent["gate"] += time.perf_counter() - t
            gate_calls += 1
            held += len(decisions)
        t = time.perf_counter()
        await store.record(
            conn,
            worker=worker_id,
            results=[
                (row["id"], row["attempts"], decisions.get(row["id"], sent), row["template_id"])
                for row in rows
            ],
        )
        spent["record"] += time.perf_counter() - t
        deliveries += len(rows)
    end, cpu = time.monotonic(), time.process_time() - cpu0
    await conn.close()
    return {
        "worker": worker_id,
        "deliveries": deliveries,
        "start": start,
        "end": end,
        "cpu": cpu,
        "spent": spent,
        "gate_calls": gate_calls,
        "held": held,
    }


def _child(url: str, variant: str, worker_id: str, go: Any, batch: int, out: Any) -> None:
    out.put(asyncio.run(_drain(url, variant, worker_id, go, batch)))


# --- the runs --------------------------------------------------------------------------------


def _run(url: str, variant: str, processes: int, batch: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(url, variant, f"w{i}", go, batch, out))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    time.sleep(1.5)  # let them import and connect, so the timed part is the drain alone
    go.set()
    results = [out.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=30)
    n = sum(r["deliveries"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    calls = sum(r["gate_calls"] for r in results)
    return {
        "variant": variant,
        "processes": processes,
        "deliveries": n,
        "held": sum(r["held"] for r in results),
        "rate": n / wall,
        "wall_us_per_delivery": wall / n * 1e6,
        "cpu_us_per_delivery": sum(r["cpu"] for r in results) / n * 1e6,
        "phase_us_per_delivery": {
            k: sum(r["spent"][k] for r in results) / n * 1e6
            for k in ("claim", "render", "gate", "record")
        },
        "gate_ms_per_call": (sum(r["spent"]["gate"] for r in results) / calls * 1e3)
        if calls
        else None,
    }


def _load(url: str, deliveries: int, recipients: int) -> None:
    import outbox

    with psycopg.connect(url) as conn:
        outbox.create_template(
            conn, "bench", "sms", "Hi {{ name }}, order {{ order }} has shipped."
        )
        for i in range(recipients):
            outbox.upsert_recipient(conn, f"user-{i}", phone=f"+1415{i:07d}")
        # A few opt-outs from other categories: the send-time check has rows to look at.
        for i in range(0, recipients, 10):
            outbox.set_preference(conn, f"user-{i}", "sms", opted_in=False, category="marketing")
        conn.execute("SET LOCAL outbox.notify = 'off'")
        chunk = 1000
        for first in range(0, deliveries, chunk):
            outbox.enqueue_many(
                conn,
                [
                    {
                        "message_id": f"m-{i}",
                        "recipient": f"user-{i % recipients}",
                        "template": "bench",
                        "channels": ["sms"],
                        "category": "orders",
                        "data": {"name": f"User {i}", "order": i},
                    }
                    for i in range(first, min(first + chunk, deliveries))
                ],
            )
        conn.commit()


def _reset(url: str, variant: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_sql("reset"))
        conn.execute(_sql("set_limits"), {"scopes": list(VARIANTS[variant][1] or ())})
        conn.execute("VACUUM ANALYZE outbox.deliveries, outbox.events, outbox.rate_buckets")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--recipients", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)

    from outbox import migrate
    from outbox.db import resolve_url
    from outbox.settings import Settings

    server = _with_dbname(resolve_url(Settings()), "postgres")
    name = f"outbox_bench_gate_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0]
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(server, name)
    try:
        migrate.upgrade(url)
        _load(url, args.deliveries, args.recipients)
        runs: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            for processes in args.processes:
                for variant in VARIANTS:  # interleaved, so all variants see the same machine
                    _reset(url, variant)
                    runs.append(_run(url, variant, processes, args.batch))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    summary = _summarise(runs, args.processes)
    print(
        f"\nPostgreSQL {version}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{args.deliveries} SMS deliveries to {args.recipients} recipients, batch {args.batch}, "
        f"median of {args.rounds} rounds\n"
    )
    header = (
        f"{'variant':<22}{'workers':>8}{'rate/s':>10}{'wall µs/d':>11}{'cpu µs/d':>10}"
        f"{'claim':>8}{'render':>8}{'gate':>8}{'record':>8}{'gate ms/call':>14}{'vs claim':>10}"
    )
    print(header + "\n" + "-" * len(header))
    for s in summary:
        phase = s["phase_us_per_delivery"]
        print(
            f"{s['variant']:<22}{s['processes']:>8}{s['rate']:>10.0f}{s['wall_us_per_delivery']:>11.0f}"
            f"{s['cpu_us_per_delivery']:>10.0f}{phase['claim']:>8.0f}{phase['render']:>8.0f}"
            f"{phase['gate']:>8.0f}{phase['record']:>8.0f}"
            f"{(format(s['gate_ms_per_call'], '.2f') if s['gate_ms_per_call'] else '-'):>14}"
            f"{s['vs_claim']:>10.2f}"
        )
    print(
        "\nphase columns: µs of one worker's time per delivery (summed over workers);"
        " vs claim: wall time per delivery relative to claim alone at the same worker count"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"server_version": version, "runs": runs, "summary": summary}, indent=2)
        )


def _summarise(runs: list[dict[str, Any]], process_counts: list[int]) -> list[dict[str, Any]]:
    out = []
    for processes in process_counts:
        base = None
        for variant in VARIANTS:
            mine = [r for r in runs if r["variant"] == variant and r["processes"] == processes]
            s = {
                "variant": variant,
                "processes": processes,
                "rate": statistics.median(r["rate"] for r in mine),
                "wall_us_per_delivery": statistics.median(r["wall_us_per_delivery"] for r in mine),
                "cpu_us_per_delivery": statistics.median(r["cpu_us_per_delivery"] for r in mine),
                "phase_us_per_delivery": {
                    k: statistics.median(r["phase_us_per_delivery"][k] for r in mine)
                    for k in ("claim", "render", "gate", "record")
                },
                "gate_ms_per_call": (
                    statistics.median(r["gate_ms_per_call"] for r in mine)
                    if mine[0]["gate_ms_per_call"] is not None
                    else None
                ),
                "held": max(r["held"] for r in mine),
            }
            base = base or s["wall_us_per_delivery"]
            s["vs_claim"] = s["wall_us_per_delivery"] / base
            out.append(s)
    return out


if __name__ == "__main__":
    main()
