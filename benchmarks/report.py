"""docs/benchmarks.md, written from the stored results (``benchmarks/results/<server>.json``).

Each server's results are kept in their own file, so a run against one server
rewrites its own section and keeps the other's. Every number in the page comes
from one of those files, that is, from an actual run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    drain,
    enqueue,
    gate,
    latency,
    memory,
    peers,
    provider_clients,
    providers,
    retention,
)
from benchmarks.harness import ROOT, md_table, median, num

RESULTS_DIR = Path(__file__).parent / "results"
DOC = ROOT / "docs" / "benchmarks.md"
NOTES = Path(__file__).parent / "notes.md"
# Server sections in this order; labels are harness.Server.label.
LABELS = {
    "service": "PostgreSQL service (OUTBOX_DATABASE_URL)",
    "embedded": "Embedded PostgreSQL (no OUTBOX_DATABASE_URL)",
}
MARKDOWN: dict[str, Callable[[dict[str, Any]], str]] = {
    "enqueue": enqueue.markdown,
    "drain": drain.markdown,
    "latency": latency.markdown,
    "providers": providers.markdown,
    "provider_clients": provider_clients.markdown,
    "gate": gate.markdown,
    "memory": memory.markdown,
    "retention": retention.markdown,
}
# Sections in this order within a server's part of the page.
TITLES = {
    "enqueue": "Enqueue (`benchmarks/enqueue.py`)",
    "drain": "Drain (`benchmarks/drain.py`)",
    "latency": "Idle wake-up latency (`benchmarks/latency.py`)",
    "providers": "Through each provider adapter to the sandbox (`benchmarks/providers.py`)",
    "provider_clients": (
        "Each adapter alone against raw HTTP clients (`benchmarks/provider_clients.py`)"
    ),
    "gate": "Admission gate cost (`benchmarks/gate.py`)",
    "memory": "Worker memory (`benchmarks/memory.py`)",
    "retention": "Claim cost with finished history kept (`benchmarks/retention.py`)",
}

INTRO = """\
# Benchmarks

Numbers from actual runs of `benchmarks/` on the machine described below; the
page is rewritten by `python -m benchmarks` (from `benchmarks/results/*.json`).
Each benchmark creates a database of its own on the server it measures
(`CREATE DATABASE`, migrations to head), and drops it at the end.

```sh
# everything, against what the project is configured for (OUTBOX_DATABASE_URL, else embedded):
.venv/bin/python -m benchmarks
# only issue 13's comparisons, with PgQueuer and procrastinate alongside (about 15 minutes):
.venv/bin/pip install -e '.[bench]'
.venv/bin/python -m benchmarks --issue13
# both servers of this page, one after the other:
export OUTBOX_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
.venv/bin/python -m benchmarks --target both
# one benchmark alone, with its own sizes (see --help of each):
.venv/bin/python -m benchmarks.enqueue --single 3000 --bulk 20000 --producers 4 --duration 5
.venv/bin/python -m benchmarks.drain --deliveries 20000 --processes 1 2 --rounds 2 --diagnose
.venv/bin/python -m benchmarks.latency --enqueues 500 --diagnose
.venv/bin/python -m benchmarks.providers --adapters sendgrid apns --deliveries 2000
.venv/bin/python -m benchmarks.provider_clients --sends 1000 --before ../main/.venv/bin/python
.venv/bin/python -m benchmarks.gate --deliveries 10000 --rounds 3
.venv/bin/python -m benchmarks.memory --deliveries 20000
.venv/bin/python -m benchmarks.retention --sizes 0,1000000,5000000 --build-budget 600
```

A full run is sized for roughly 15–25 minutes per server on 2 cores, most of
it building retention's 5-million-row history (bounded by `--build-budget`; its
progress is logged); each section below says how long it took. `--quick` is a
smoke run of a few minutes whose sections are marked as such.

`--issue13` runs only enqueue, drain (2 processes), latency, providers (2
workers) and provider_clients, in interleaved rounds, sized for about 15 minutes:
what issue 13 states its targets in, as ratios against the peers, the raw
clients and the rate at filing, measured in the same run.

How each is measured:

- **enqueue**: one notification per transaction (statement + durable COMMIT)
  via `outbox.enqueue`, against a plain one-row INSERT into a similar table
  (`bench.plain_outbox`: same kind of columns and partial index), interleaved
  in rounds; bulk via `enqueue_many` (one round trip per batch); 4 producer
  *processes* committing one enqueue each, with the NOTIFY trigger on and off
  (`SET outbox.notify = 'off'`), a LISTEN connection attached throughout.
- **drain**: pending deliveries inserted set-based with NOTIFY off while the
  `outbox worker` processes (no-op provider) sit idle in LISTEN; one statement
  reads the database clock and sends the wake-up; rate = deliveries /
  (max(finished_at) − that time). The raw baseline is a minimal consumer on
  its own table with the same partial index, woken the same way, in the same
  run, alternating with Outbox: claim a batch with `FOR UPDATE SKIP LOCKED`
  (committed, rows read), then mark it done (committed). The one-statement
  floor (claim and complete in one commit, nothing read) runs alongside.
  Medians over rounds.
- **latency**: one idle `outbox worker` with the `record` provider; one
  enqueue per transaction; latency = the provider call's `time.time()` −
  `time.time()` right after `commit()` returned. The bare LISTEN loop is a
  process that LISTENs on the same channel and records when each
  notification arrives, for the same transactions.
- **providers**: `outbox worker` processes configured for one adapter
  (SendGrid, Mailchimp, Twilio, Vonage, APNs, FCM) send to the provider
  sandbox (`outbox sandbox`, its own process, HTTP; APNs HTTP/2 over TLS) on
  this machine, no faults injected; N notifications enqueued in one
  transaction; rate = sent / (last `sent_at` − the clock read just before
  that commit); worker and sandbox CPU from /proc. With `--before PYTHON`
  (or `BENCH_BEFORE_PYTHON`), each case also runs with that interpreter's
  `outbox worker` (another checkout's venv), alternating: before/after in one run.
- **provider_clients**: each adapter alone, no database: in a process of its
  own, 50 tasks share N `adapter.send(message)` calls; in the same round, the
  same requests to the same sandbox from a bare `httpx.AsyncClient` (the
  reference the target is stated in) and a bare aiohttp session (HTTP/1.1's
  ceiling here); `--before PYTHON` adds the adapter as another checkout has
  it. Sends/s, the process's CPU per send, the ratio to raw httpx per round.
- **gate**: worker processes running the worker's own claim, render,
  `Gate.admit` and record in a loop (no provider call), with and without the
  render and the rate limits (set too high to defer anything), 1 and 2
  processes, variants interleaved in rounds: what admission costs per delivery.
- **memory**: one `outbox worker` (no-op provider, concurrency 100) drains a
  backlog; its RSS idle in LISTEN, and its peak during the drain (VmHWM reset
  just before it).
- **retention**: claim + record throughput (the worker's statements, no
  provider) on a database keeping 0, 1M and 5M finished deliveries vs an empty
  database, rounds alternating between the two; EXPLAIN (ANALYZE, BUFFERS) of
  one claim at each size.
- **peers** (`benchmarks/peers.py`): PgQueuer and procrastinate (the optional
  `bench` extra), each in a database of its own on the same server, its schema
  installed and its jobs enqueued and consumed through its own API, in the same
  rounds as Outbox: bulk enqueue B jobs per call and transaction (PgQueuer's
  `Queries.enqueue` with lists, procrastinate's `batch_defer_async`); a drain of
  N jobs enqueued in one transaction (tables analyzed in it, as Outbox's are)
  by the peer's own worker processes, idle until its own NOTIFY, no-op handler,
  jobs/s = N / (last completion − first pick) from its own tables; idle wake-up
  latency, commit → the handler starts. PgQueuer runs on asyncpg (its own
  first driver) with `batch_size` = the drain's batch; procrastinate with
  `concurrency=10` and a pool of 12; everything else their defaults. The
  module's docstring says why each setting.
- **diagnostics** (`--diagnose`, on by default in `python -m benchmarks`): one
  extra, unmeasured run of drain and of latency with the worker started through
  `benchmarks/trace.py` (the real `outbox worker` with its database and provider
  calls timed) and sampled by py-spy if it is installed (`pip install py-spy`;
  not a project dependency). They say where the worker's time goes, waiting and
  computing; the headline numbers never come from these runs.
"""


def load() -> dict[str, dict[str, Any]]:
    """Stored results by server label."""
    out = {}
    for label in LABELS:
        path = RESULTS_DIR / f"{label}.json"
        if path.exists():
            out[label] = json.loads(path.read_text())
    return out


def _get(data: dict[str, Any] | None, bench: str) -> dict[str, Any] | None:
    if data is None:
        return None
    entry = data.get("benchmarks", {}).get(bench)
    return entry["result"] if entry else None


def summary(results: dict[str, dict[str, Any]]) -> str:
    """One table, one column per server: the headline numbers and the targets."""
    labels = [label for label in LABELS if label in results]
    rows: list[list[str]] = []

    def add(name: str, fn: Callable[[dict[str, Any]], str], bench: str) -> None:
        cells = []
        for label in labels:
            r = _get(results[label], bench)
            try:
                cells.append(fn(r) if r is not None else "not run")
            except (KeyError, IndexError, StopIteration):
                cells.append("n/a")
        rows.append([name, *cells])

    def single(kind: str) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            x = next(v for v in r["single"] if v["variant"] == kind)
            return f"{num(x['tx_per_s'])} tx/s ({x['ratio_to_plain']:.2f}× plain)"

        return cell

    def bulk(kind: str) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            x = next((v for v in r["bulk"] if v["variant"] == kind), None)
            if x is None:  # a page from before this variant existed
                return "not run"
            rates = (num(x["notifications_per_s"]), num(x["deliveries_per_s"]))
            text = f"{rates[0]} notif./s = {rates[1]} deliveries/s"
            if "ratio_to_copy" in x and kind != "copy-address":
                text += f" ({x['ratio_to_copy']:.2f}× COPY)"
            return text

        return cell

    def drained(processes: int) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            x = next(v for v in r["summary"] if v["processes"] == processes)
            mark = "✅" if x["ratio"] >= drain.TARGET_RATIO else "❌"
            rates = f"{num(x['outbox_rate'])}/s vs raw {num(x['raw_rate'])}/s"
            return f"{rates} = **{x['ratio']:.0%}** {mark}"

        return cell

    def lat(key: str, target: bool) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            x = r[key]
            text = f"{x['p50']:.2f} / {x['p95']:.2f} / {x['p99']:.2f}"
            if target:
                ok = x["p50"] < latency.TARGET_P50_MS and x["p99"] < latency.TARGET_P99_MS
                text += " ✅" if ok else " ❌"
            return text

        return cell

    add("single enqueue, direct address", single("address"), "enqueue")
    add("single enqueue, recipient (4 deliveries)", single("recipient"), "enqueue")
    add("plain INSERT (baseline)", single("plain"), "enqueue")
    add("bulk: plain COPY (baseline)", bulk("copy-address"), "enqueue")
    add("bulk enqueue_many, direct addresses", bulk("many-address"), "enqueue")
    add("bulk enqueue_stream, direct addresses", bulk("stream-address"), "enqueue")
    add("bulk enqueue_many, recipients (4 deliveries)", bulk("many-recipient"), "enqueue")
    add("bulk enqueue_stream, recipients (4 deliveries)", bulk("stream-recipient"), "enqueue")
    add(
        "4 producers, commits/s NOTIFY on / off",
        lambda r: (
            f"{num(r['concurrent']['commits_per_s_notify_on'])} / "
            f"{num(r['concurrent']['commits_per_s_notify_off'])} "
            f"(NOTIFY costs {100 * r['concurrent']['notify_cost']:.0f}%)"
        ),
        "enqueue",
    )
    add("drain, 1 worker (target ≥ 80% of raw)", drained(1), "drain")
    add("drain, 2 workers (target ≥ 80% of raw)", drained(2), "drain")

    def variant(r: dict[str, Any]) -> str:
        x = next(v for v in r["summary"] if v["processes"] == 1)
        return f"{num(x['variant_rate'])}/s = {x['variant_ratio']:.0%} of raw"

    drains = [r for r in (_get(d, "drain") for d in results.values()) if r is not None]
    options = next((r["settings"].get("variant_pgoptions") for r in drains), None)
    if options:
        add(f"(diagnostic) drain, 1 worker, PGOPTIONS=`{options}`", variant, "drain")
    add(
        "audit events written per delivery",
        lambda r: f"{r['summary'][0]['events_per_delivery']:.2f}",
        "drain",
    )
    add(
        "wake-up latency p50 / p95 / p99 ms (target < 1.5 / – / < 3)",
        lat("outbox", True),
        "latency",
    )
    add("bare LISTEN loop p50 / p95 / p99 ms", lat("listen", False), "latency")

    def adapters(processes: int) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            runs = sorted(
                (
                    x
                    for x in r["runs"]
                    if x["processes"] == processes and x.get("version") != "before"
                ),
                key=lambda x: x["rate"],
            )
            lo, hi = runs[0], runs[-1]
            return (
                f"{num(lo['rate'])}/s (`{lo['adapter']}`) – {num(hi['rate'])}/s (`{hi['adapter']}`)"
            )

        return cell

    add("through the sandbox, 1 worker: slowest – fastest adapter", adapters(1), "providers")
    add("through the sandbox, 2 workers: slowest – fastest adapter", adapters(2), "providers")

    def vs_raw(r: dict[str, Any]) -> str:
        ratios = [(median(x["kinds"]["adapter"]["vs_httpx"]), x["adapter"]) for x in r["summary"]]
        lo, hi = min(ratios), max(ratios)
        return f"{lo[0]:.2f}× (`{lo[1]}`) – {hi[0]:.2f}× (`{hi[1]}`)"

    add(
        "adapter alone ÷ raw httpx client, lowest – highest (target ≥ 0.5×)",
        vs_raw,
        "provider_clients",
    )

    def admission(r: dict[str, Any]) -> str:
        full = [x for x in r["summary"] if x["variant"] == "+render+gate"]
        return " / ".join(f"{x['vs_claim']:.2f}×" for x in full)

    add("claim+render+gate, wall per delivery vs claim alone (1 / 2 workers)", admission, "gate")
    add(
        "worker RSS at concurrency 100: idle → peak while draining",
        lambda r: f"{r['idle_rss_mb']:.0f} → {r['peak_rss_mb']:.0f} MB",
        "memory",
    )

    def history(r: dict[str, Any]) -> str:
        cells = []
        for e in r["sizes"]:
            if e["history"] == 0:
                continue
            mark = "✅" if e["within_tolerance"] else "❌"
            cells.append(f"{e['vs_empty']:+.0%} at {num(e['history'])} {mark}")
        return ", ".join(cells) or "no history size measured"

    add("claim+record with finished rows kept vs empty (target ≥ −10%)", history, "retention")
    servers = [results[label]["server"] for label in labels]
    headers = ["", *(f"{s['label']}: PostgreSQL {s['version'].split()[0]}" for s in servers)]
    return md_table(headers, rows)


def targets(results: dict[str, dict[str, Any]]) -> str:
    """Issue 13's targets, each as measured in the stored run, ✅/❌ per server."""
    by_server = {
        label: {
            bench: _get(results[label], bench)
            for bench in ("enqueue", "drain", "latency", "providers", "provider_clients")
        }
        for label in LABELS
        if label in results
    }
    return peers.targets_markdown(by_server)


def server_section(label: str, data: dict[str, Any]) -> str:
    srv = data["server"]
    settings = ", ".join(f"{k}={v}" for k, v in srv["settings"].items())
    parts = [
        f"## {LABELS[label]}: PostgreSQL {srv['version']}",
        f"- Server: {srv['backend']}\n- Server settings: {settings}",
    ]
    stored = data.get("benchmarks", {})
    for bench in (b for b in TITLES if b in stored):
        entry = stored[bench]
        meta = entry["meta"]
        m = meta["machine"]
        quick = " — quick smoke run (small sizes), not for comparison" if meta.get("quick") else ""
        parts.append(f"### {TITLES[bench]}{quick}")
        took = f" ({meta['wall_seconds']:,.0f} s)" if "wall_seconds" in meta else ""
        parts.append(
            f"Run {m['date']} at commit `{m['git_commit']}`{_dirty(m)}{took}; "
            f"machine {meta['cpu_busy_before']:.0%} busy "
            f"(other processes) just before, load average {', '.join(map(str, m['load_average']))}."
        )
        parts.append(MARKDOWN[bench](entry["result"]))
    return "\n\n".join(parts)


def _dirty(m: dict[str, Any]) -> str:
    n = m.get("uncommitted_product_files", 0)
    return (
        f" plus uncommitted changes in {n} product files (the working tree was measured)"
        if n
        else ""
    )


def machine_section(results: dict[str, dict[str, Any]]) -> str:
    machines = [
        e["meta"]["machine"] for d in results.values() for e in d.get("benchmarks", {}).values()
    ]
    if not machines:
        return ""
    m = machines[0]
    return (
        f"## Machine\n\n{m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB RAM, {m['os']}; "
        f"Python {m['python']}, psycopg {m['psycopg']} (libpq {m['libpq']}). "
        f"The machine is shared: "
        f"other people's test runs may have been running too; each section says how busy it was "
        f"just before the benchmark started."
    )


def notes_section(results: dict[str, dict[str, Any]]) -> str:
    """``benchmarks/notes.md``: what a person read in the numbers, for the commit it names.

    Its first line is ``commit: <sha>``; if the results come from another commit,
    the section says so, since the notes may no longer hold.
    """
    if not NOTES.exists():
        return ""
    first, _, body = NOTES.read_text().partition("\n")
    commit = first.removeprefix("commit:").strip()
    measured = sorted(
        {
            e["meta"]["machine"]["git_commit"]
            for d in results.values()
            for e in d.get("benchmarks", {}).values()
        }
    )
    title = f"## What the numbers say (notes on the runs at commit `{commit}`)"
    if measured and measured != [commit]:
        title += (
            f"\n\n> These notes were written for `{commit}`; the numbers above are from "
            f"{', '.join(f'`{c}`' for c in measured)}. They may no longer hold."
        )
    return f"{title}\n\n{body.strip()}"


def render(results: dict[str, dict[str, Any]]) -> str:
    parts = [
        INTRO.strip(),
        "## Summary",
        summary(results) if results else "No results yet.",
        "## Issue 13: next to PgQueuer and procrastinate, same run" if results else "",
        targets(results),
        notes_section(results),
        machine_section(results),
    ]
    parts += [server_section(label, results[label]) for label in LABELS if label in results]
    return "\n\n".join(p for p in parts if p) + "\n"


def write() -> Path:
    DOC.write_text(render(load()))
    return DOC
