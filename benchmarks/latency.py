"""Idle wake-up latency: from an enqueue's COMMIT to the provider call, next to a bare LISTEN loop.

On a fresh database of its own, in alternating blocks:

* **Outbox**: one ``outbox worker`` process with the ``record`` provider (it
  appends a JSON line with ``at = time.time()`` per send), started and left
  idle until it waits in LISTEN. The benchmark then enqueues one notification
  (direct email address) per transaction, takes ``time.time()`` right after
  ``commit()`` returns, waits until the record file shows that send, and pauses
  10-30 ms (random) so the worker is idle again. Latency = ``at`` - commit time.
  The 'processing' event (database clock: the start mark's transaction start,
  written after the claim and the render, committed just before the provider
  call; see workers/starts.py) splits each latency into commit → start mark
  (wake-up, the claim's round trip, render) and start mark → provider call
  (the mark's own round trip and commit, then the call).
* **bare LISTEN loop** (the floor): a process that LISTENs on the same channel
  and appends ``time.time()`` when a notification arrives; the same enqueue
  transactions; latency = arrival - commit time.
* **peers** (benchmarks/peers.py): one idle PgQueuer and one idle procrastinate
  worker process, each in its own database; one job per transaction through
  its own enqueue API; latency = the handler's ``time.time()`` - commit time.

All clocks are the same host clock. Reported: p50/p95/p99/max over all sends,
against the targets (p50 < 1.5 ms, p99 < 3 ms).

    python -m benchmarks.latency [--enqueues 500] [--blocks 2]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import psycopg

import outbox
from benchmarks import peers, profile, trace
from benchmarks.harness import (
    Processes,
    Server,
    add_before_argument,
    agent_command,
    fresh_database,
    log,
    md_table,
    num,
    percentile,
    sql,
    standalone,
    wait_sessions,
    worker_command,
    worker_env,
)

TEMPLATE = "bench"
TARGET_P50_MS = 1.5
TARGET_P99_MS = 3.0
SEND_TIMEOUT_S = 10.0
PROFILE_HZ = 1000


class _Tail:
    """New lines of a file another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def wait_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if b"\n" in self.partial:
                line, self.partial = self.partial.split(b"\n", 1)
                return line.decode()
            if self.path.exists():
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
                self.offset += len(chunk)
                self.partial += chunk
                if chunk:
                    continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing new in {self.path} after {timeout}s")
            time.sleep(0.0002)


def _enqueue_and_wait(
    conn: psycopg.Connection, tail: _Tail, message_id: str, i: int
) -> tuple[float, str]:
    """Enqueue one notification, commit; (commit time, the line that showed it arrived)."""
    outbox.enqueue(
        conn, message_id, address=f"user{i}@example.com", template=TEMPLATE, data={"n": i}
    )
    conn.commit()
    committed = time.time()
    return committed, tail.wait_line(SEND_TIMEOUT_S)


def _pause() -> None:
    time.sleep(random.uniform(0.010, 0.030))


def outbox_block(
    url: str,
    procs: Processes,
    tmp: Path,
    block: int,
    n: int,
    diagnose_in: Path | None = None,
    python: str | None = None,
) -> list[dict[str, float]]:
    """n enqueues to one idle worker; per send: commit, claim and send times, delivery id.

    With ``diagnose_in`` (a directory) the worker is traced (benchmarks/trace.py,
    spans in ``spans.jsonl``) and, if py-spy is installed, sampled (``py-spy.txt``).
    ``python``: the worker is that interpreter's ``outbox worker`` (``--before``).
    """
    record = tmp / f"record-{block}{'-before' if python else ''}.jsonl"
    env = worker_env(
        url,
        providers_email='["record"]',
        providers_sms='["record"]',
        providers_push='["record"]',
        record_file=record,
    )
    command = worker_command(python)
    if diagnose_in is not None:
        command = trace.command()
        env[trace.ENV] = str(diagnose_in / "spans.jsonl")
    worker = procs.spawn(command, env=env, name="worker")
    samples = []
    sampler = None
    try:
        wait_sessions(url, "outbox-worker listen", 1, procs=[worker], owner=procs)
        time.sleep(0.5)  # its first claim after LISTEN is done; it is idle
        if diagnose_in is not None and profile.py_spy() is not None:
            sampler = profile.Sampler(worker.pid, diagnose_in / "py-spy.txt", rate=PROFILE_HZ)
            time.sleep(0.5)  # py-spy attaches
        tail = _Tail(record)
        with psycopg.connect(url) as conn:
            for i in range(n):
                message_id = f"lat-outbox{'-before' if python else ''}-{block}-{i}"
                committed, line = _enqueue_and_wait(conn, tail, message_id, i)
                sent = json.loads(line)
                if sent["message_id"] != message_id:
                    raise RuntimeError(f"expected a send of {message_id}, the worker sent {line}")
                samples.append(
                    {"commit": committed, "sent": sent["at"], "delivery_id": sent["delivery_id"]}
                )
                _pause()
    finally:
        if sampler is not None:
            sampler.stop()
        code = procs.stop(worker)
    if code != 0:
        raise RuntimeError(f"worker exited with {code}:\n{procs.output(worker)[-3000:]}")
    with psycopg.connect(url) as conn:
        claimed = dict(conn.execute(sql("processing_times")).fetchall())
    for sample in samples:
        sample["claimed"] = claimed[sample["delivery_id"]]
    return samples


def listen_block(
    url: str, procs: Processes, tmp: Path, block: int, n: int
) -> list[dict[str, float]]:
    """n enqueues with only a bare LISTEN loop running; per notification: commit, arrival."""
    out = tmp / f"listen-{block}.txt"
    listener = procs.spawn(
        agent_command(
            "listener",
            url,
            "--channel",
            "outbox_work",
            "--out",
            out,
            "--timeout",
            n * (SEND_TIMEOUT_S + 0.1) + 30,
        ),
        name="listener",
    )
    samples = []
    try:
        wait_sessions(url, "bench-listener", 1, procs=[listener], owner=procs)
        tail = _Tail(out)
        with psycopg.connect(url) as conn:
            for i in range(n):
                committed, line = _enqueue_and_wait(conn, tail, f"lat-listen-{block}-{i}", i)
                samples.append({"commit": committed, "sent": float(line)})
                _pause()
    finally:
        procs.stop(listener)
        # Nobody delivers these: remove them, so the next worker block starts with an empty queue.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql("outbox_reset"))
    return samples


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = [1000 * v for v in values]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "min": min(ms),
        "mean": mean(ms),
    }


def diagnose(url: str, procs: Processes, tmp: Path, n: int) -> dict[str, Any]:
    """An extra block with a traced (and, if possible, profiled) worker: each wake-up's steps."""
    where = tmp / "diagnosis"
    where.mkdir()
    samples = outbox_block(url, procs, tmp, -1, n, diagnose_in=where)
    spans = trace.read(where / "spans.jsonl")
    claims = [s for s in spans if s["name"] == "claim" and s["n"] > 0]
    admits = [s for s in spans if s["name"] == "admit"]
    steps: dict[str, list[float]] = {key: [] for key, _ in STEPS}
    for sample in samples:
        commit, sent = sample["commit"], sample["sent"]
        claim = max(
            (c for c in claims if c["start"] <= sent), key=lambda c: c["start"], default=None
        )
        if claim is None:
            continue
        admit = max(
            (a for a in admits if claim["end"] <= a["start"] <= sent),
            key=lambda a: a["start"],
            default=None,
        )
        steps["wake"].append(claim["start"] - commit)
        steps["claim"].append(claim["end"] - claim["start"])
        if admit is not None:
            steps["after_claim"].append(admit["start"] - claim["end"])
            steps["admit"].append(admit["end"] - admit["start"])
        steps["to_send"].append(sent - (admit["end"] if admit is not None else claim["end"]))
        steps["total"].append(sent - commit)
    out: dict[str, Any] = {
        "wakeups": n,
        "steps": {key: stats_ms(values) for key, values in steps.items() if values},
        "calls": trace.durations(spans),
        "slowest": slowest(samples, spans),
    }
    if (where / "py-spy.txt").exists():
        out["profile"] = profile.summarise(where / "py-spy.txt")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql("outbox_reset"))
    log(f"diagnostic block: p50 {out['steps']['total']['p50']:.2f} ms")
    return out


def slowest(
    samples: list[dict[str, float]], spans: list[dict[str, Any]], count: int = 5
) -> list[dict[str, Any]]:
    """The ``count`` slowest wake-ups, each with what else the worker did meanwhile.

    Per wake-up (commit → provider call): its total, and per span name (claim,
    record, heartbeat, gc2, ...) the milliseconds of that call overlapping it.
    A tail that overlaps a ``record`` or a GC pass points there; one that
    overlaps only its own claim points at the server (the claim's commit).
    """
    out = []
    for sample in sorted(samples, key=lambda s: s["commit"] - s["sent"])[:count]:
        start, end = sample["commit"], sample["sent"]
        overlaps: dict[str, float] = {}
        for span in spans:
            shared = min(end, span["end"]) - max(start, span["start"])
            if shared > 0:
                overlaps[span["name"]] = overlaps.get(span["name"], 0.0) + 1000 * shared
        out.append({"total_ms": 1000 * (end - start), "overlaps": overlaps})
    return out


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    per_block = max(1, args.enqueues // args.blocks)
    box: list[dict[str, float]] = []
    before: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    others: dict[str, list[dict[str, float]]] = {}
    diagnosis = None
    with (
        fresh_database(server, "latency") as url,
        tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp,
        Processes(Path(tmp)) as procs,
        peers.databases(server) as peer_urls,
    ):
        with psycopg.connect(url) as conn:
            outbox.create_template(conn, TEMPLATE, "email", "Hello {{ n }}", subject="Note {{ n }}")
            conn.commit()
        if args.diagnose:
            diagnosis = diagnose(url, procs, Path(tmp), per_block)
        for block in range(args.blocks):
            box += outbox_block(url, procs, Path(tmp), block, per_block)
            log(
                f"block {block + 1}/{args.blocks}: outbox p50 "
                f"{1000 * percentile([s['sent'] - s['commit'] for s in box], 50):.2f} ms"
            )
            if args.before:
                before += outbox_block(url, procs, Path(tmp), block, per_block, python=args.before)
                log(
                    f"block {block + 1}/{args.blocks}: outbox before ({args.before}) p50 "
                    f"{1000 * percentile([s['sent'] - s['commit'] for s in before], 50):.2f} ms"
                )
            bare += listen_block(url, procs, Path(tmp), block, per_block)
            log(
                f"block {block + 1}/{args.blocks}: bare LISTEN p50 "
                f"{1000 * percentile([s['sent'] - s['commit'] for s in bare], 50):.2f} ms"
            )
            for peer, peer_url in peer_urls.items():
                mine = others.setdefault(peer, [])
                mine += peers.latency_block(
                    peer, peer_url, procs, Path(tmp), block, per_block, _Tail, _pause
                )
                log(
                    f"block {block + 1}/{args.blocks}: {peer} p50 "
                    f"{1000 * percentile([s['sent'] - s['commit'] for s in mine], 50):.2f} ms"
                )
    split = [(s["claimed"] - s["commit"], s["sent"] - s["claimed"]) for s in box]
    result = {
        "settings": {
            "enqueues": per_block * args.blocks,
            "blocks": args.blocks,
            "provider": "record",
            "pause_ms": "10-30",
            "before": args.before,
        },
        "outbox": stats_ms([s["sent"] - s["commit"] for s in box]),
        "outbox_wake": stats_ms([w for w, _ in split]),
        "outbox_claim_to_send": stats_ms([c for _, c in split]),
        "listen": stats_ms([s["sent"] - s["commit"] for s in bare]),
        **(
            {"outbox_before": stats_ms([s["sent"] - s["commit"] for s in before])} if before else {}
        ),
        "peers": {
            peer: stats_ms([s["sent"] - s["commit"] for s in samples])
            for peer, samples in others.items()
        },
        "peer_versions": peers.versions(),
    }
    if diagnosis is not None:
        result["diagnosis"] = diagnosis
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]

    def row(label: str, x: dict[str, float], target: bool = False) -> tuple[str, ...]:
        cells = [f"{x[k]:.2f}" for k in ("p50", "p95", "p99", "max")]
        if target:
            cells[0] += (
                " ✅" if x["p50"] < TARGET_P50_MS else f" ❌ (+{x['p50'] - TARGET_P50_MS:.2f})"
            )
            cells[2] += (
                " ✅" if x["p99"] < TARGET_P99_MS else f" ❌ (+{x['p99'] - TARGET_P99_MS:.2f})"
            )
        return (label, *cells)

    parts = [
        f"{s['enqueues']} enqueues per system, one per transaction, in {s['blocks']} "
        f"alternating blocks; "
        f"a {s['pause_ms']} ms pause after each send so the worker is idle again. Milliseconds, "
        f"from `commit()` returning to the provider call (Outbox), the notification's arrival "
        f"(bare LISTEN) or the job handler's start (peers).",
        md_table(
            ["", "p50", "p95", "p99", "max"],
            [
                row(
                    f"Outbox worker, commit → provider call (target p50 < {TARGET_P50_MS}, "
                    f"p99 < {TARGET_P99_MS})",
                    result["outbox"],
                    target=True,
                ),
                row(
                    "… of which commit → start mark (wake-up, claim, render)", result["outbox_wake"]
                ),
                row(
                    "… of which start mark → provider call (its commit, the call)",
                    result["outbox_claim_to_send"],
                ),
                *(
                    [row(f"Outbox worker before (`{s.get('before')}`)", result["outbox_before"])]
                    if "outbox_before" in result
                    else []
                ),
                row("bare LISTEN loop, commit → notification arrives", result["listen"]),
                *(
                    row(f"{peers.TITLES[p]} worker, commit → handler starts", x)
                    for p, x in result.get("peers", {}).items()
                ),
            ],
        ),
    ]
    if "diagnosis" in result:
        parts.append(diagnosis_markdown(result["diagnosis"]))
    return "\n\n".join(parts)


STEPS = (
    ("wake", "commit → claim call starts (NOTIFY delivery, event loop wake-up)"),
    ("claim", "claim statement (round trip)"),
    ("after_claim", "claim returned → admission check starts (Python)"),
    ("admit", "admission check statement (round trip)"),
    ("to_send", "→ provider call (render, message, task start)"),
    ("total", "total, commit → provider call"),
)


def diagnosis_markdown(d: dict[str, Any]) -> str:
    rows = [
        (label, *(f"{d['steps'][key][p]:.2f}" for p in ("p50", "p95", "p99")))
        for key, label in STEPS
        if key in d["steps"]
    ]
    parts = [
        f"**Where a wake-up's time goes**: an extra, unmeasured block of {d['wakeups']} enqueues "
        f"to a worker whose calls are timed (`benchmarks/trace.py`), same clock as the commit "
        f"time. Milliseconds:",
        md_table(["step", "p50", "p95", "p99"], rows),
    ]
    gcs = {k: v for k, v in d.get("calls", {}).items() if k.startswith("gc")}
    parts.append(
        "Garbage collector passes in the worker during that block: "
        + (
            ", ".join(
                f"generation {k[2:]}: {c['calls']} (longest {c['max_ms']:.2f} ms)"
                for k, c in sorted(gcs.items())
            )
            if gcs
            else "none"
        )
        + "."
    )
    if d.get("slowest"):
        parts.append(
            "The slowest wake-ups of that block, and the worker's calls (and GC passes) "
            "overlapping each, in ms:\n\n"
            + md_table(
                ["commit → provider call", "overlapping calls"],
                [
                    (
                        f"{x['total_ms']:.2f}",
                        ", ".join(
                            f"`{name}` {ms:.2f}"
                            for name, ms in sorted(x["overlaps"].items(), key=lambda kv: -kv[1])
                        )
                        or "none",
                    )
                    for x in d["slowest"]
                ],
            )
        )
    if "profile" in d:
        p = d["profile"]
        parts.append(
            profile.markdown(
                p,
                f"Its CPU, sampled by py-spy at {PROFILE_HZ} Hz over the same block "
                f"({num(p['samples'])} busy samples, about "
                f"{1000 * p['samples'] / PROFILE_HZ / d['wakeups']:.1f} ms of CPU per wake-up)",
            )
        )
    return "\n\n".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enqueues", type=int, default=500, help="enqueues per system")
    parser.add_argument(
        "--blocks", type=int, default=2, help="alternating blocks (worker, bare LISTEN)"
    )
    add_before_argument(
        parser,
        "also run, in every block, the Outbox worker of this interpreter (another "
        "checkout's .venv/bin/python): before/after in one run",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="first, one extra (unmeasured) block with the worker traced (benchmarks/trace.py) "
        "and sampled by py-spy if installed: where a wake-up's time goes",
    )


def main(argv: list[str] | None = None) -> None:
    standalone("latency", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
