"""Drain rate: how fast `outbox worker` processes empty a backlog, next to a raw SKIP LOCKED loop.

For each process count (1 and 2) and each round, on one fresh database:

* **Outbox**: N ``outbox worker`` processes (no-op provider, batch size B,
  concurrency C = 2B by default: every claim can take a full batch, and the
  next claim runs while the previous batch is sent) are started and
  left idle until each waits in LISTEN. Then n pending email deliveries are
  inserted set-based in one transaction with the NOTIFY trigger off
  (notification + delivery + 'created' event each, as enqueue leaves them), and
  one statement takes the database clock (t0) and sends the wake-up NOTIFY.
  Rate = deliveries sent / (max(finished_at) - t0): database timestamps only,
  wake-up included. The workers write the audit events as always (processing
  and sent); the table reports how many per delivery.
* **Raw loop**: the physical limit of a SKIP LOCKED queue. N processes of a
  minimal consumer (its own table ``bench.raw_jobs`` with the same partial
  index as the deliveries), started idle in LISTEN and woken the same way,
  each repeating until a claim finds nothing: claim B rows with FOR UPDATE
  SKIP LOCKED (marked processing, committed, rows read), then mark them done
  (committed). That is the least any at-least-once consumer does: its claim
  must be committed before the work, its completion after. Rate = rows /
  (max(finished_at) - t0). The target ratio is against this loop.
* **One-statement floor**: the same consumer claiming and completing each
  batch in a single statement (one commit, nothing read back). Not a queue
  (a crash mid-batch leaves no trace), but the most the server can do;
  reported alongside.
* **Peers**: PgQueuer's and procrastinate's own worker processes draining
  their own jobs (benchmarks/peers.py: each in its own database, enqueued and
  consumed through its own API; jobs/s from its own tables).

They alternate within each round, and tables are truncated between
runs, so all see the same machine and the same table state. Reported: the
median rate over the rounds, the ratio Outbox / raw (target ≥ 0.80), events
per delivery, average claim size, the wake-up delay (first claim - t0), and CPU
time of the worker processes per 1,000 deliveries. With ``--diagnose`` one
extra, unmeasured 1-worker drain runs with the worker's database and provider
calls timed (benchmarks/trace.py) and its CPU sampled by py-spy (if installed):
where the worker's time goes, waiting and computing.

    python -m benchmarks.drain [--deliveries 20000] [--processes 1 2] [--rounds 2] [--diagnose]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

import outbox
from benchmarks import peers, profile, trace
from benchmarks.harness import (
    Processes,
    Server,
    agent_command,
    fresh_database,
    log,
    md_table,
    median,
    num,
    sql,
    standalone,
    wait_for,
    wait_sessions,
    worker_command,
    worker_env,
)

TEMPLATE = "bench"
TARGET_RATIO = 0.80
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def setup(url: str, html_kb: int = 0) -> None:
    """The template every delivery uses: one line, or with ``html_kb`` KiB of HTML body
    (an ordinary marketing email is 10-100 KiB) to see what its size costs."""
    html = None
    if html_kb:
        html = "<p>Hello {{ n }}</p>" + "<p>A paragraph of the newsletter.</p>" * (html_kb * 28)
    with psycopg.connect(url) as conn:
        outbox.create_template(
            conn, TEMPLATE, "email", "Hello {{ n }}", subject="Note {{ n }}", html_body=html
        )
        conn.execute(sql("create_baselines"))
        conn.commit()


def outbox_run(
    url: str,
    procs: Processes,
    *,
    workers: int,
    n: int,
    batch: int,
    concurrency: int,
    timeout: float,
    pgoptions: str | None = None,
    diagnose_in: Path | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """One drain of n deliveries by ``workers`` idle `outbox worker` processes.

    ``python``: run the workers with that interpreter's ``outbox`` (``-P``: not
    this checkout's), e.g. another checkout's .venv/bin/python, for before/after.

    With ``diagnose_in`` (a directory): the workers are traced (benchmarks/trace.py)
    and the first one is sampled by py-spy if it is installed; the result then
    has "trace" and "profile".
    """
    with _admin(url) as conn:
        conn.execute(sql("outbox_reset"))
    env = worker_env(
        url,
        providers_email='["noop"]',
        providers_sms='["noop"]',
        providers_push='["noop"]',
        worker_batch_size=batch,
        worker_concurrency=concurrency,
        # Only the NOTIFY wakes them: no poll can start the drain before t0.
        poll_interval_seconds=600,
    )
    if pgoptions:
        env["PGOPTIONS"] = pgoptions  # libpq: server settings for the workers' sessions
    command = [python, "-P", "-m", "outbox", "worker"] if python else worker_command()
    if diagnose_in is not None:
        command = trace.command()
        env[trace.ENV] = str(diagnose_in / "spans.jsonl")
    children = [procs.spawn(command, env=env, name="worker") for _ in range(workers)]
    sampler = None
    try:
        wait_sessions(url, "outbox-worker listen", workers, procs=children, owner=procs)
        time.sleep(0.3)  # let each finish the claim it makes right after LISTEN
        if diagnose_in is not None and profile.py_spy() is not None:
            sampler = profile.Sampler(children[0].pid, diagnose_in / "py-spy.txt")
            time.sleep(0.5)  # py-spy attaches
        with psycopg.connect(url) as conn:
            conn.execute(sql("disable_notify_local"))
            conn.execute(sql("outbox_fill"), {"n": n, "prefix": "drain-", "template": TEMPLATE})
            conn.commit()
        with _admin(url) as conn:
            conn.execute(sql("outbox_analyze"))
            cpu_before = [cpu_seconds(c.pid) for c in children]
            t0 = conn.execute(sql("outbox_go")).fetchone()["t0"]
            most_processing = 0

            def drained() -> bool:
                nonlocal most_processing
                left = conn.execute(sql("outbox_unfinished")).fetchone()
                most_processing = max(most_processing, left["processing"])
                return left["pending"] + left["processing"] == 0

            # Rare polls: they cost the server CPU the workers need; the rate comes from
            # max(finished_at), not from when this loop notices the end.
            wait_for(drained, timeout, f"{workers} worker(s) to drain {n} deliveries", interval=0.1)
            cpu = sum(cpu_seconds(c.pid) for c in children) - sum(cpu_before)
            r = conn.execute(sql("outbox_drain_result")).fetchone()
    finally:
        if sampler is not None:
            sampler.stop()
        codes = [procs.stop(c) for c in children]
    if any(codes):
        raise RuntimeError(f"worker exit codes {codes}:\n{procs.output(children[0])[-3000:]}")
    if r["sent"] != n or r["not_sent"]:
        raise RuntimeError(f"drain incomplete: {r}")
    seconds = r["last_finished"] - t0
    out = {
        "system": "outbox",
        "processes": workers,
        "deliveries": n,
        "seconds": seconds,
        "rate": n / seconds,
        "events_per_delivery": r["events_written"] / n,
        "avg_claim": r["processing_events"] / max(1, r["claims"]),
        "wake_ms": 1000 * (r["first_claim"] - t0),
        "max_attempts": r["max_attempts"],
        "cpu_s_per_1000": 1000 * cpu / n,
        "most_processing": most_processing,
        "resent": r["resent"],
        "recovered": r["recovered"],
    }
    if diagnose_in is not None:
        out["trace"] = trace.durations(trace.read(diagnose_in / "spans.jsonl"), wall=seconds)
        if sampler is not None:
            out["profile"] = profile.summarise(diagnose_in / "py-spy.txt")
    return out


def raw_run(
    url: str,
    procs: Processes,
    *,
    loops: int,
    n: int,
    batch: int,
    timeout: float,
    shape: str = "claim-then-done",
) -> dict[str, Any]:
    """One drain of n rows by ``loops`` raw SKIP LOCKED loop processes of ``shape``."""
    with _admin(url) as conn:
        conn.execute(sql("raw_reset"))
    command = agent_command(
        "raw-loop", url, "--batch", batch, "--timeout", timeout, "--shape", shape
    )
    children = [procs.spawn(command, name="raw-loop") for _ in range(loops)]
    try:
        wait_sessions(url, "bench-raw-loop", loops, procs=children, owner=procs)
        with _admin(url) as conn:
            conn.execute(sql("raw_fill"), {"n": n})
            conn.execute(sql("raw_analyze"))
            t0 = conn.execute(sql("raw_go")).fetchone()["t0"]
            cpu = 0.0
            for child in children:
                code = child.wait(timeout)
                if code != 0:
                    raise RuntimeError(
                        f"raw loop exited with {code}: {procs.output(child)[-2000:]}"
                    )
                cpu += json.loads(procs.output(child).strip().splitlines()[-1])["cpu_s"]
            r = conn.execute(sql("raw_result")).fetchone()
    finally:
        for c in children:
            procs.stop(c)
    if r["done"] != n or r["not_done"]:
        raise RuntimeError(f"raw drain incomplete: {r}")
    seconds = r["last_finished"] - t0
    return {
        "system": "raw" if shape == "claim-then-done" else "floor",
        "processes": loops,
        "deliveries": n,
        "seconds": seconds,
        "rate": n / seconds,
        "cpu_s_per_1000": 1000 * cpu / n,
    }


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Alternate raw and Outbox drains for each process count, ``rounds`` times; summarise."""
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "settings": {
            "deliveries": args.deliveries,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "processes": args.processes,
            "rounds": args.rounds,
            "provider": "noop",
            "worker_pgoptions": args.worker_pgoptions,
            "variant_pgoptions": args.variant_pgoptions,
            "before": args.before,
            "template_html_kb": args.template_html_kb,
        }
    }
    with (
        fresh_database(server, "drain") as url,
        tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp,
        Processes(Path(tmp)) as procs,
        peers.databases(server) as peer_urls,
    ):
        setup(url, args.template_html_kb)
        # The same drain settings for every run of this benchmark.
        raw_loop = functools.partial(
            raw_run, url, procs, n=args.deliveries, batch=args.batch, timeout=args.timeout
        )
        drain = functools.partial(
            outbox_run,
            url,
            procs,
            n=args.deliveries,
            batch=args.batch,
            concurrency=args.concurrency,
            timeout=args.timeout,
        )
        for r in range(args.rounds):
            for count in args.processes:
                raw = raw_loop(loops=count)
                log(f"round {r + 1}/{args.rounds}: raw loop x{count}: {raw['rate']:,.0f}/s")
                floor = raw_loop(loops=count, shape="one-statement")
                log(
                    f"round {r + 1}/{args.rounds}: one-statement floor x{count}: "
                    f"{floor['rate']:,.0f}/s"
                )
                # With --before, this checkout's drain and the before one alternate which
                # goes first, so that neither always follows the raw loops.
                versions = [None, args.before] if args.before else [None]
                for python in versions[r % len(versions) :] + versions[: r % len(versions)]:
                    box = drain(workers=count, pgoptions=args.worker_pgoptions, python=python)
                    log(
                        f"round {r + 1}/{args.rounds}: outbox worker x{count}"
                        f"{' (before)' if python else ''}: {box['rate']:,.0f}/s "
                        f"({box['rate'] / raw['rate']:.0%} of raw)"
                    )
                    system = "outbox-before" if python else "outbox"
                    runs.append(box | {"round": r, "system": system})
                runs += [raw | {"round": r}, floor | {"round": r}]
                runs += peers.drain_round(
                    peer_urls,
                    procs,
                    workers=count,
                    n=args.deliveries,
                    batch=args.batch,
                    timeout=args.timeout,
                    round_=r,
                )
                if args.variant_pgoptions:
                    variant = drain(workers=count, pgoptions=args.variant_pgoptions)
                    log(
                        f"round {r + 1}/{args.rounds}: outbox worker x{count} with PGOPTIONS="
                        f"{args.variant_pgoptions!r}: {variant['rate']:,.0f}/s"
                    )
                    runs.append(variant | {"round": r, "system": "outbox-variant"})
        if args.diagnose:
            diagnosis = drain(workers=1, pgoptions=args.worker_pgoptions, diagnose_in=Path(tmp))
            log(f"diagnostic drain (traced, profiled): {diagnosis['rate']:,.0f}/s")
            result["diagnosis"] = {
                k: diagnosis[k] for k in ("rate", "seconds", "trace", "profile") if k in diagnosis
            }
    summary = []
    for count in args.processes:
        raw = [x for x in runs if x["system"] == "raw" and x["processes"] == count]
        box = [x for x in runs if x["system"] == "outbox" and x["processes"] == count]
        floor = [x for x in runs if x["system"] == "floor" and x["processes"] == count]
        raw_rate, box_rate = median([x["rate"] for x in raw]), median([x["rate"] for x in box])
        summary.append(
            {
                "processes": count,
                "floor_rate": median([x["rate"] for x in floor]),
                "raw_rate": raw_rate,
                "outbox_rate": box_rate,
                "ratio": box_rate / raw_rate,
                "ratios": [b["rate"] / a["rate"] for a, b in zip(raw, box, strict=True)],
                "raw_runs": [x["rate"] for x in raw],
                "outbox_runs": [x["rate"] for x in box],
                "events_per_delivery": median([x["events_per_delivery"] for x in box]),
                "avg_claim": median([x["avg_claim"] for x in box]),
                "wake_ms": median([x["wake_ms"] for x in box]),
                "outbox_cpu_s_per_1000": median([x["cpu_s_per_1000"] for x in box]),
                "raw_cpu_s_per_1000": median([x["cpu_s_per_1000"] for x in raw]),
                "most_processing": max(x["most_processing"] for x in box),
                "resent": [x["resent"] for x in box],
            }
        )
        summary[-1]["peers"] = peers.drain_summary(runs, count)
        for system, key in (("outbox-variant", "variant"), ("outbox-before", "before")):
            variant = [x for x in runs if x["system"] == system and x["processes"] == count]
            if variant:
                summary[-1] |= {
                    f"{key}_rate": median([x["rate"] for x in variant]),
                    f"{key}_ratio": median([x["rate"] for x in variant]) / raw_rate,
                    f"{key}_runs": [x["rate"] for x in variant],
                    f"{key}_most_processing": max(x["most_processing"] for x in variant),
                    f"{key}_resent": [x["resent"] for x in variant],
                    f"{key}_cpu_s_per_1000": median([x["cpu_s_per_1000"] for x in variant]),
                    f"{key}_events_per_delivery": median(
                        [x["events_per_delivery"] for x in variant]
                    ),
                }
        if "before_rate" in summary[-1]:
            # After / before within each round (the two ran back to back).
            summary[-1]["after_before_ratios"] = [
                a["rate"] / b["rate"]
                for a, b in zip(
                    box,
                    [x for x in runs if x["system"] == "outbox-before" and x["processes"] == count],
                    strict=True,
                )
            ]
    result["runs"] = runs
    result["summary"] = summary
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = []
    for x in result["summary"]:
        verdict = (
            "met"
            if x["ratio"] >= TARGET_RATIO
            else f"missed by {100 * (TARGET_RATIO - x['ratio']):.0f} points"
        )
        rows.append(
            (
                x["processes"],
                num(x["raw_rate"]),
                num(x["outbox_rate"]),
                f"**{x['ratio']:.0%}** ({verdict})",
                f"{num(x['floor_rate'])} ({x['outbox_rate'] / x['floor_rate']:.0%})"
                if "floor_rate" in x
                else "",
                f"{x['events_per_delivery']:.2f}",
                f"{x['avg_claim']:.0f}",
                f"{x['wake_ms']:.1f}",
                f"{x['outbox_cpu_s_per_1000']:.3f} / {x['raw_cpu_s_per_1000']:.3f}",
            )
        )
    runs = [
        (
            x["processes"],
            ", ".join(num(v) for v in x["raw_runs"]),
            ", ".join(num(v) for v in x["outbox_runs"]),
            ", ".join(f"{v:.0%}" for v in x["ratios"]),
            num(x["most_processing"]),
            ", ".join(num(v) for v in x.get("resent", [])),
        )
        for x in result["summary"]
    ]
    parts = [
        f"{num(s['deliveries'])} pending email deliveries"
        + (
            f" (template with {s['template_html_kb']} KiB of HTML)"
            if s.get("template_html_kb")
            else ""
        )
        + f", `{s['provider']}` provider, batch size "
        f"{s['batch']}, worker concurrency {s['concurrency']}; median of {s['rounds']} rounds "
        f"(raw loop, one-statement floor and Outbox alternate). Rates from database timestamps: "
        f"wake-up NOTIFY → max(finished_at).",
        md_table(
            [
                "processes",
                "raw loop /s (claim, then mark done)",
                "Outbox worker /s",
                "Outbox / raw (target ≥ 80%)",
                "one-statement floor /s (Outbox / floor)",
                "events per delivery",
                "avg start group",
                "first send ms",
                "CPU s per 1,000 (worker / raw loop)",
            ],
            rows,
        ),
        "Every round, with the most deliveries seen in `processing` at once (claimed, result "
        "not recorded yet) and how many were attempted more than once (their lease expired "
        "before their result was recorded: sent again):",
        md_table(
            ["processes", "raw /s", "Outbox /s", "ratio", "most in processing", "re-sent"], runs
        ),
    ]
    if peer_table := peers.drain_markdown(result["summary"]):
        parts.append(peer_table)
    variants = [x for x in result["summary"] if "variant_rate" in x]
    if variants:
        parts.append(
            f"Diagnostic: the same Outbox drain with the workers' sessions started with "
            f"`PGOPTIONS={s['variant_pgoptions']!r}` (nothing else changed), in the same rounds:"
        )
        parts.append(
            md_table(
                [
                    "processes",
                    "Outbox /s",
                    "Outbox / raw",
                    "every round",
                    "most in processing",
                    "re-sent",
                    "worker CPU s per 1,000",
                ],
                [
                    (
                        x["processes"],
                        num(x["variant_rate"]),
                        f"{x['variant_ratio']:.0%}",
                        ", ".join(num(v) for v in x["variant_runs"]),
                        num(x["variant_most_processing"]),
                        ", ".join(num(v) for v in x.get("variant_resent", [])),
                        f"{x['variant_cpu_s_per_1000']:.3f}"
                        if "variant_cpu_s_per_1000" in x
                        else "",
                    )
                    for x in variants
                ],
            )
        )
    befores = [x for x in result["summary"] if "before_rate" in x]
    if befores:
        parts.append(
            f"Before/after: the same drain by the workers of `{s['before']}` (another "
            f"checkout), alternating with this checkout's in every round; after / before is "
            f"taken within each round, and its median reported:"
        )
        parts.append(
            md_table(
                [
                    "processes",
                    "before /s",
                    "after /s",
                    "after / before (median)",
                    "every round",
                    "before / raw",
                    "events per delivery (before / after)",
                    "worker CPU s per 1,000 (before / after)",
                ],
                [
                    (
                        x["processes"],
                        num(x["before_rate"]),
                        num(x["outbox_rate"]),
                        f"**{median(x['after_before_ratios']):.3f}**",
                        ", ".join(f"{v:.3f}" for v in x["after_before_ratios"]),
                        f"{x['before_ratio']:.0%}",
                        f"{x['before_events_per_delivery']:.2f} / {x['events_per_delivery']:.2f}",
                        f"{x['before_cpu_s_per_1000']:.3f} / {x['outbox_cpu_s_per_1000']:.3f}",
                    )
                    for x in befores
                ],
            )
        )
    if "diagnosis" in result:
        d = result["diagnosis"]
        parts.append(
            trace.markdown(
                d["trace"],
                f"**Where one worker's time goes during a drain**: an extra, unmeasured "
                f"1-worker drain ({num(d['rate'])}/s) with the worker's calls timed "
                f"(`benchmarks/trace.py`); "
                f"busy = the call's total time / the drain's {d['seconds']:.2f} s. Calls on "
                f"different connections overlap, so the shares can add up to more than 100%.",
            )
        )
        if "profile" in d:
            p = d["profile"]
            parts.append(
                profile.markdown(
                    p,
                    f"Its CPU, sampled by py-spy at 200 Hz in the same drain "
                    f"({num(p['samples'])} busy samples = {p['samples'] / 200:.2f} s of CPU)",
                )
            )
    return "\n\n".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deliveries", type=int, default=20000, help="pending deliveries per drain"
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="process counts to run"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds (median is reported)")
    parser.add_argument(
        "--batch", type=int, default=100, help="claim batch size (worker and raw loop)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=200,
        help="worker sends in flight (≥ batch, else a claim is capped by free slots; "
        "2 x batch lets the next claim run while a batch is being sent)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up on one drain after this"
    )
    parser.add_argument(
        "--template-html-kb",
        type=int,
        default=0,
        help="give the deliveries' email template an HTML body of this many KiB "
        "(default 0: a one-line template)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="one extra 1-worker drain, traced (benchmarks/trace.py) and sampled by py-spy "
        "if installed: where the worker's time goes",
    )
    parser.add_argument(
        "--worker-pgoptions",
        metavar="PGOPTIONS",
        help="PGOPTIONS for the worker processes, for experiments "
        "(e.g. '-c plan_cache_mode=force_custom_plan'); default: none",
    )
    parser.add_argument(
        "--before",
        metavar="PYTHON",
        default=os.environ.get("BENCH_BEFORE_PYTHON") or None,
        help="also run, in every round, the drain with the workers of another checkout "
        "(its .venv/bin/python, run with -P), alternating order: before/after in one run "
        "(default: $BENCH_BEFORE_PYTHON). The schema is this checkout's: only for changes "
        "the other checkout's worker runs on",
    )
    parser.add_argument(
        "--variant-pgoptions",
        metavar="PGOPTIONS",
        help="also run, in every round, an Outbox drain whose workers get these "
        "PGOPTIONS, reported next to the plain one (a diagnostic)",
    )


def main(argv: list[str] | None = None) -> None:
    standalone("drain", __doc__, add_arguments, run, markdown, argv)


if __name__ == "__main__":
    main()
