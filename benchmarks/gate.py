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
sees the same rows. Each worker is a process of its own (``python -m
benchmarks.gate loop ...``) that connects, waits in LISTEN, and starts when the
benchmark sends the go NOTIFY, once all of them listen; it prints its counts as
one JSON line. The database is created for the benchmark and dropped at the
end; nothing else is touched.

    python -m benchmarks.gate [--deliveries 10000] [--recipients 1000] [--batch 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness import (
    Processes,
    Server,
    fresh_database,
    log,
    md_table,
    num,
    sql,
    standalone,
    wait_sessions,
)

# variant -> (render?, the rate-limit scopes configured; None: no gate call at all)
VARIANTS: dict[str, tuple[bool, tuple[str, ...] | None]] = {
    "claim": (False, None),
    "+render": (True, None),
    "+render+gate": (True, ("provider", "recipient")),
    "  provider cap only": (True, ("provider",)),
    "  recipient cap only": (True, ("recipient",)),
}
LISTEN_NAME = "bench-gate-listen"


# --- one worker process ----------------------------------------------------------------------


class _Named:
    """The Router only needs a provider's name here: nothing is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel = "*"

    async def aclose(self) -> None:
        return None


async def _drain(url: str, variant: str, worker_id: str, batch: int, wait: float) -> dict[str, Any]:
    from outbox.channel_limits import check_limits
    from outbox.providers.router import Router
    from outbox.templates import render
    from outbox.workers import store
    from outbox.workers.decide import Decision
    from outbox.workers.delivery import TemplateVersions
    from outbox.workers.gate import Gate

    conn = await store.connect(url, f"bench-gate {worker_id}")
    templates = TemplateVersions()
    router = Router({"bench": _Named("bench")}, {"sms": ["bench"]})  # type: ignore[dict-item]
    rendering, scopes = VARIANTS[variant]
    gate = Gate(lambda: datetime.now(UTC), router) if scopes is not None else None
    sent = Decision("sent", "sent", provider="bench", provider_message_id="bench")
    spent = {"claim": 0.0, "render": 0.0, "gate": 0.0, "record": 0.0}
    deliveries = gate_calls = held = 0
    # Connected and set up; the benchmark starts everyone at once when all listen.
    with psycopg.connect(
        url, autocommit=True, application_name=f"{LISTEN_NAME} {worker_id}"
    ) as listen:
        listen.execute(sql("gate_listen"))
        if not any(True for _ in listen.notifies(timeout=wait, stop_after=1)):
            raise SystemExit(f"gate loop {worker_id}: no go signal in {wait:g} s")
    cpu0, start = time.process_time(), time.monotonic()
    while True:
        t = time.perf_counter()
        rows = await store.claim(
            conn,
            worker=worker_id,
            channels=("sms",),
            limit=batch,
            lease_seconds=300,
            templates=templates,
        )
        spent["claim"] += time.perf_counter() - t
        if not rows:
            break
        if rendering:
            t = time.perf_counter()
            for row in rows:
                template = row.resolved_template()
                check_limits(row.channel, render(template, row.data), row.data, template=template)
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
                (row.id, row.attempts, decisions.get(row.id, sent), row.template_id) for row in rows
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


def loop_main(argv: list[str]) -> None:
    """``python -m benchmarks.gate loop URL VARIANT WORKER_ID``: one worker of a run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate loop")
    parser.add_argument("url")
    parser.add_argument("variant", choices=list(VARIANTS))
    parser.add_argument("worker_id")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--wait", type=float, default=120.0, help="longest wait for the go")
    args = parser.parse_args(argv)
    result = asyncio.run(_drain(args.url, args.variant, args.worker_id, args.batch, args.wait))
    print(json.dumps(result), flush=True)


# --- the runs --------------------------------------------------------------------------------


def _run(
    url: str, procs: Processes, variant: str, processes: int, batch: int, timeout: float
) -> dict[str, Any]:
    children = [
        procs.spawn(
            [
                sys.executable,
                "-m",
                "benchmarks.gate",
                "loop",
                url,
                variant,
                f"w{i}",
                "--batch",
                str(batch),
            ],
            name="gate-loop",
        )
        for i in range(processes)
    ]
    try:
        # Imported, connected and listening: the timed part is the drain alone.
        wait_sessions(url, LISTEN_NAME, processes, procs=children, owner=procs)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql("gate_go"))
        results = []
        for child in children:
            code = child.wait(timeout)
            if code != 0:
                raise RuntimeError(f"gate loop exited with {code}:\n{procs.output(child)[-3000:]}")
            results.append(json.loads(procs.output(child).strip().splitlines()[-1]))
    finally:
        for child in children:
            procs.stop(child)
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
        conn.execute(sql("allow_history_delete"))
        conn.execute(sql("gate_reset"))
        conn.execute(sql("gate_set_limits"), {"scopes": list(VARIANTS[variant][1] or ())})
        conn.execute(sql("gate_vacuum"))


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant at every process count, interleaved, ``rounds`` times; medians."""
    runs: list[dict[str, Any]] = []
    with (
        fresh_database(server, "gate") as url,
        tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        log(f"loading {args.deliveries} SMS deliveries to {args.recipients} recipients")
        _load(url, args.deliveries, args.recipients)
        for r in range(args.rounds):
            for processes in args.processes:
                for variant in VARIANTS:  # interleaved, so all variants see the same machine
                    _reset(url, variant)
                    runs.append(_run(url, procs, variant, processes, args.batch, args.timeout))
                    log(
                        f"round {r + 1}/{args.rounds}: {variant.strip()} x{processes}: "
                        f"{runs[-1]['rate']:,.0f}/s"
                    )
    return {
        "settings": {
            "deliveries": args.deliveries,
            "recipients": args.recipients,
            "batch": args.batch,
            "rounds": args.rounds,
            "processes": args.processes,
        },
        "runs": runs,
        "summary": _summarise(runs, args.processes),
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = []
    for x in result["summary"]:
        phase = x["phase_us_per_delivery"]
        rows.append(
            (
                x["variant"].strip()
                if not x["variant"].startswith(" ")
                else f"↳ {x['variant'].strip()}",
                x["processes"],
                num(x["rate"]),
                num(x["wall_us_per_delivery"]),
                num(x["cpu_us_per_delivery"]),
                " / ".join(num(phase[k]) for k in ("claim", "render", "gate", "record")),
                f"{x['gate_ms_per_call']:.2f}" if x["gate_ms_per_call"] is not None else "–",
                f"{x['vs_claim']:.2f}",
            )
        )
    return "\n\n".join(
        [
            f"{num(s['deliveries'])} SMS deliveries to {num(s['recipients'])} recipients, drained "
            f"by worker processes running the worker's own claim / render / `Gate.admit` / "
            f"record in a loop (no provider call), batch {s['batch']}; median of "
            f"{s['rounds']} rounds, variants interleaved. Limits are set so high that nothing "
            f"is deferred: the cost of holding them, not of waiting. Phases: µs of worker time "
            f"per delivery (summed over workers); × claim: wall time per delivery relative to "
            f"claim alone at the same worker count.",
            md_table(
                [
                    "variant",
                    "workers",
                    "deliveries/s",
                    "wall µs/delivery",
                    "CPU µs/delivery",
                    "claim / render / gate / record µs",
                    "gate ms/call",
                    "× claim",
                ],
                rows,
            ),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deliveries", type=int, default=10_000, help="SMS deliveries")
    parser.add_argument("--recipients", type=int, default=1_000, help="recipients they go to")
    parser.add_argument("--batch", type=int, default=100, help="claim batch size")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="worker process counts"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one drain after this"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loop"]:
        loop_main(argv[1:])
    else:
        standalone("gate", __doc__, add_arguments, run, markdown, argv)


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
