"""PostgreSQL job queues next to Outbox, each through its own API: PgQueuer and procrastinate.

Issue 13 states its targets as ratios against these peers, measured in the
same run on the same server. This module gives the enqueue, drain and latency
benchmarks a peer's three workloads, which they run in the same rounds as
Outbox's (so drift on a shared machine hits all alike):

* **bulk enqueue** (:func:`bulk_rounds`, from ``benchmarks/enqueue.py``): B jobs
  per call and per transaction through the peer's own batch API (PgQueuer's
  ``Queries.enqueue`` with lists: one statement; procrastinate's
  ``Task.batch_defer_async``: one statement), no worker running; jobs/s from
  the producer's clock, like Outbox's ``enqueue_many`` next to it;
* **drain** (:func:`drain_run`, from ``benchmarks/drain.py``): N pending jobs
  enqueued in one transaction through the peer's API while P worker processes
  of the peer's own consumer sit idle, woken by the peer's own NOTIFY; a no-op
  handler; jobs/s = N / (last completion - first pick), both from the peer's
  own tables (database clock);
* **idle wake-up latency** (:func:`latency_block`, from
  ``benchmarks/latency.py``): one idle worker process; one job enqueued per
  transaction; latency = the handler's ``time.time()`` - ``time.time()`` right
  after the enqueue returned (committed), the method latency.py uses for
  Outbox and the bare LISTEN loop.

Each peer works in a database of its own on the server the run targets
(:func:`databases`; created and dropped by ``benchmarks/harness.py``), with its
schema installed by its own API (``Queries.install``,
``SchemaManager.apply_schema_async``). Both use psycopg 3 here, as Outbox does.

Settings, each peer's default unless said otherwise (the server's settings,
synchronous_commit on, are the same for every system):

* PgQueuer: ``QueueManager.run(batch_size=B)`` with B = the drain's batch size
  (its default is 10; Outbox's drain claims 100 per batch, and PgQueuer with
  100 drains faster than with 10 here); ``max_concurrent_tasks`` unlimited
  (default); one psycopg connection per process (its driver's design).
* procrastinate: ``run_worker_async(concurrency=C)`` with C = 10 (its default
  is 1, one job at a time per process, which leaves a 2-core machine idle
  between round trips); its connection pool sized to C + 2 (the default 4 would
  make the job tasks wait for connections); ``listen_notify`` on (default);
  jobs kept after completion (default ``delete_jobs`` = never).

The peers are an optional extra (``pip install -e '.[bench]'``); a peer that
is not installed is skipped and the report says so.

    python -m benchmarks.peers worker pgqueuer URL [--batch 100] [--record FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from benchmarks.harness import (
    Processes,
    Server,
    fresh_database,
    log,
    md_table,
    median,
    num,
    sql,
    wait_for,
)

PEERS = ("pgqueuer", "procrastinate")
TITLES = {"pgqueuer": "PgQueuer", "procrastinate": "procrastinate"}
# procrastinate's worker: jobs in flight per process, and its pool.
PROCRASTINATE_CONCURRENCY = 10
# procrastinate drains a few hundred jobs/s here (one fetch statement per job): a
# smaller backlog keeps its drains to seconds; the rate is per job either way.
MAX_DRAIN = {"procrastinate": 2000}
# The job name (PgQueuer entrypoint, procrastinate task) every workload uses.
JOB = "bench"
APP_PREFIX = "bench-peer-"
READY_TIMEOUT = 60.0
SEND_TIMEOUT_S = 10.0

Enqueue = Callable[[list[dict[str, Any]]], Awaitable[None]]


def installed() -> list[str]:
    """The peers whose package is installed (the optional ``bench`` extra)."""
    return [p for p in PEERS if importlib.util.find_spec(p) is not None]


def versions() -> dict[str, str]:
    return {p: importlib.metadata.version(p) for p in installed()}


def job(i: int) -> dict[str, Any]:
    """One job's arguments: what an Outbox notification to a direct address carries."""
    return {"address": f"user{i}@example.com", "n": i}


# --- each peer's own API -------------------------------------------------------------------


def _procrastinate_app(url: str, application_name: str, handler: Callable[[dict], None]) -> Any:
    from procrastinate import App, PsycopgConnector

    app = App(
        connector=PsycopgConnector(
            conninfo=url,
            kwargs={"application_name": application_name},
            min_size=1,
            max_size=PROCRASTINATE_CONCURRENCY + 2,
        )
    )

    @app.task(name=JOB)
    async def bench(**kwargs: Any) -> None:
        handler(kwargs)

    return app


async def _asyncpg(url: str, application_name: str) -> Any:
    """An asyncpg connection to ``url`` (a libpq conninfo string or URL)."""
    import asyncpg

    p = conninfo_to_dict(url)
    return await asyncpg.connect(
        host=p.get("host"),
        port=int(p.get("port") or 5432),
        user=p.get("user"),
        password=p.get("password"),
        database=p.get("dbname"),
        server_settings={"application_name": application_name},
    )


def _pgqueuer_enqueue(queries: Any) -> Enqueue:
    async def enqueue(jobs: list[dict[str, Any]]) -> None:
        if len(jobs) == 1:
            await queries.enqueue(JOB, json.dumps(jobs[0]).encode())
        else:
            payloads = [json.dumps(j).encode() for j in jobs]
            await queries.enqueue([JOB] * len(jobs), payloads, [0] * len(jobs))

    return enqueue


def _procrastinate_enqueue(deferrer: Any) -> Enqueue:
    async def enqueue(jobs: list[dict[str, Any]]) -> None:
        if len(jobs) == 1:
            await deferrer.defer_async(**jobs[0])
        else:
            await deferrer.batch_defer_async(*jobs)

    return enqueue


async def install(peer: str, url: str) -> None:
    """Install ``peer``'s schema into ``url`` with its own API."""
    if peer == "pgqueuer":
        from pgqueuer import Queries

        conn = await _asyncpg(url, f"{APP_PREFIX}install")
        try:
            await Queries.from_asyncpg_connection(conn).install()
        finally:
            await conn.close()
    else:
        app = _procrastinate_app(url, f"{APP_PREFIX}install", lambda _: None)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()


@contextlib.asynccontextmanager
async def producer(peer: str, url: str) -> AsyncIterator[Enqueue]:
    """``enqueue(jobs)``: the jobs in one transaction, by ``peer``'s own enqueue API."""
    if peer == "pgqueuer":
        from pgqueuer import Queries

        conn = await _asyncpg(url, "bench-producer")
        try:
            yield _pgqueuer_enqueue(Queries.from_asyncpg_connection(conn))
        finally:
            await conn.close()
    else:
        app = _procrastinate_app(url, "bench-producer", lambda _: None)
        async with app.open_async():
            yield _procrastinate_enqueue(app.tasks[JOB])


async def fill(peer: str, url: str, n: int) -> None:
    """n jobs in ONE transaction by ``peer``'s API, its tables analyzed in it before COMMIT.

    Outbox's drain and the raw loop get fresh statistics before their drain
    (ANALYZE after the fill); a peer's gets the same. The peer's own trigger
    sends its wake-up NOTIFY at the commit.
    """
    jobs = [job(i) for i in range(n)]
    if peer == "pgqueuer":
        from pgqueuer import Queries

        conn = await _asyncpg(url, "bench-producer")
        try:
            async with conn.transaction():
                await _pgqueuer_enqueue(Queries.from_asyncpg_connection(conn))(jobs)
                await conn.execute(sql("pgqueuer_analyze"))
        finally:
            await conn.close()
    else:
        app = _procrastinate_app(url, "bench-producer", lambda _: None)
        async with app.open_async(), await psycopg.AsyncConnection.connect(url) as conn:
            deferrer = app.tasks[JOB].configure(connection=conn)
            await _procrastinate_enqueue(deferrer)(jobs)
            await conn.execute(sql("procrastinate_analyze"))
            await conn.commit()


def reset(peer: str, url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql(f"{peer}_reset"))


async def _install_all(urls: dict[str, str]) -> None:
    for peer, url in urls.items():
        await install(peer, url)


@contextlib.contextmanager
def databases(server: Server) -> Iterator[dict[str, str]]:
    """A fresh database per installed peer on ``server``, its schema installed; dropped after."""
    with contextlib.ExitStack() as stack:
        urls = {
            peer: stack.enter_context(fresh_database(server, f"peer_{peer}", migrate=False))
            for peer in installed()
        }
        asyncio.run(_install_all(urls))
        yield urls


# --- the worker process (python -m benchmarks.peers worker ...) ----------------------------


def _handler(record: str | None) -> Callable[[dict[str, Any]], None]:
    """The job handler: nothing, or append ``<time.time()> <n>`` to ``record``."""
    if record is None:
        return lambda _job: None
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def handle(args: dict[str, Any]) -> None:
        os.write(fd, f"{time.time()!r} {args['n']}\n".encode())

    return handle


async def _pgqueuer_worker(
    url: str, name: str, batch: int | None, handle: Callable[[dict], None]
) -> None:
    from pgqueuer import Queries, QueueManager
    from pgqueuer.models import Job

    conn = await _asyncpg(url, name)
    try:
        manager = QueueManager(Queries.from_asyncpg_connection(conn))

        @manager.entrypoint(JOB)
        async def bench(job: Job) -> None:
            handle(json.loads(job.payload or b"{}"))

        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, manager.shutdown.set)
        await manager.run(**({"batch_size": batch} if batch else {}))
    finally:
        await conn.close()


async def _procrastinate_worker(url: str, name: str, handle: Callable[[dict], None]) -> None:
    app = _procrastinate_app(url, name, handle)
    async with app.open_async():
        # Its own SIGTERM/SIGINT handlers stop it gracefully.
        await app.run_worker_async(concurrency=PROCRASTINATE_CONCURRENCY, wait=True)


def worker_main(args: argparse.Namespace) -> None:
    handle = _handler(args.record)
    if args.peer == "pgqueuer":
        asyncio.run(_pgqueuer_worker(args.url, args.name, args.batch, handle))
    else:
        asyncio.run(_procrastinate_worker(args.url, args.name, handle))


def worker_command(
    peer: str, url: str, index: int, *, batch: int | None, record: Path | None
) -> list[str]:
    """A worker process of ``peer``; ``batch``: PgQueuer's batch_size (None: its default)."""
    argv = [sys.executable, "-m", "benchmarks.peers", "worker", peer, url]
    argv += ["--name", f"{APP_PREFIX}{peer}-{index}"]
    argv += ["--batch", str(batch)] if batch else []
    return [*argv, "--record", str(record)] if record is not None else argv


def _start_workers(
    peer: str,
    url: str,
    procs: Processes,
    count: int,
    *,
    batch: int | None,
    record: Path | None = None,
) -> list[Any]:
    """``count`` idle worker processes of ``peer``, each with a session open."""
    children = [
        procs.spawn(worker_command(peer, url, i, batch=batch, record=record), name=peer)
        for i in range(count)
    ]
    with psycopg.connect(url, autocommit=True) as conn:

        def ready() -> bool:
            for child in children:
                if child.poll() is not None:
                    raise RuntimeError(
                        f"{peer} worker exited with {child.returncode}:\n"
                        f"{procs.output(child)[-3000:]}"
                    )
            prefix = f"{APP_PREFIX}{peer}-"
            return conn.execute(sql("peer_sessions"), {"prefix": prefix}).fetchone()[0] >= count

        wait_for(ready, READY_TIMEOUT, f"{count} {peer} worker(s) to connect")
    time.sleep(1.0)  # past start-up: LISTEN issued, first (empty) fetch done
    return children


def _stop(peer: str, procs: Processes, children: list[Any]) -> None:
    codes = [procs.stop(c) for c in children]
    bad = [(c, code) for c, code in zip(children, codes, strict=True) if code not in (0, -15)]
    if bad:
        raise RuntimeError(f"{peer} worker exit codes {codes}:\n{procs.output(bad[0][0])[-3000:]}")


# --- the three workloads -------------------------------------------------------------------


async def _bulk(peer: str, url: str, n: int, batch: int) -> float:
    async with producer(peer, url) as enqueue:
        await enqueue([job(-1)])  # connection, plans: not timed
        started = time.perf_counter()
        for start in range(0, n, batch):
            await enqueue([job(i) for i in range(start, min(n, start + batch))])
        return time.perf_counter() - started


def bulk_run(peer: str, url: str, *, n: int, batch: int) -> dict[str, Any]:
    """n jobs, ``batch`` per call and transaction, through ``peer``'s batch API."""
    reset(peer, url)
    seconds = asyncio.run(_bulk(peer, url, n, batch))
    return {"system": peer, "jobs": n, "batch": batch, "seconds": seconds, "rate": n / seconds}


def bulk_rounds(
    server: Server,
    outbox_round: Callable[[], list[dict[str, Any]]],
    *,
    rounds: int,
    n: int,
    batch: int,
    compare: str = "address",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Outbox's bulk enqueue (``outbox_round``) and each peer's, alternating for ``rounds``.

    ``outbox_round`` runs Outbox's bulk section once on an emptied database and
    returns its rows (per variant: notifications, deliveries, seconds, and the
    rates of its ``runs``). Returns those rows summed over the rounds (the shape
    one round has) and the comparison: per system its rate per round and
    overall, Outbox's from the variant named ``compare``.
    """
    outbox_rows: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    with databases(server) as urls:
        for r in range(rounds):
            for row in outbox_round():
                total = outbox_rows.setdefault(
                    row["variant"],
                    row | {"notifications": 0, "deliveries": 0, "seconds": 0.0, "runs": []},
                )
                for key in ("notifications", "deliveries", "seconds"):
                    total[key] += row[key]
                total["runs"] = total["runs"] + row.get("runs", [])
                if row["variant"] == compare:
                    runs.append(
                        {"system": "outbox", "round": r, "jobs": row["deliveries"]}
                        | {"seconds": row["seconds"], "rate": row["deliveries_per_s"]}
                    )
            for peer, url in urls.items():
                run = bulk_run(peer, url, n=n, batch=batch) | {"round": r}
                runs.append(run)
                log(f"bulk round {r + 1}/{rounds}: {peer} {run['rate']:,.0f} jobs/s")
    for row in outbox_rows.values():
        row["notifications_per_s"] = row["notifications"] / row["seconds"]
        row["deliveries_per_s"] = row["deliveries"] / row["seconds"]
    return list(outbox_rows.values()), {
        "compared": compare,
        "batch": batch,
        "rounds": rounds,
        "versions": versions(),
        "systems": _by_system(runs),
    }


def _by_system(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system: every run's rate, the overall rate (sum of jobs / sum of seconds)."""
    out: dict[str, dict[str, Any]] = {}
    for system in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == system]
        jobs, seconds = sum(r["jobs"] for r in mine), sum(r["seconds"] for r in mine)
        out[system] = {"rate": jobs / seconds, "runs": [r["rate"] for r in mine]}
    return out


def drain_run(
    peer: str, url: str, procs: Processes, *, workers: int, n: int, batch: int, timeout: float
) -> dict[str, Any]:
    """One drain of n jobs by ``workers`` idle processes of ``peer``'s own worker."""
    reset(peer, url)
    children = _start_workers(peer, url, procs, workers, batch=batch)
    try:
        asyncio.run(fill(peer, url, n))  # one transaction; its commit's NOTIFY wakes them
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:

            def drained() -> dict[str, Any] | None:
                r = conn.execute(sql(f"{peer}_drain_result")).fetchone()
                return r if r["done"] + r["not_done"] >= n else None

            r = wait_for(drained, timeout, f"{workers} {peer} worker(s) to drain {n}", 0.1)
    finally:
        _stop(peer, procs, children)
    if r["done"] != n:
        raise RuntimeError(f"{peer} drain incomplete: {r}")
    seconds = r["last_done"] - r["first_pick"]
    return {"system": peer, "processes": workers, "deliveries": n, "seconds": seconds} | {
        "rate": n / seconds
    }


def drain_round(
    urls: dict[str, str],
    procs: Processes,
    *,
    workers: int,
    n: int,
    batch: int,
    timeout: float,
    round_: int,
) -> list[dict[str, Any]]:
    """One drain per peer (``drain_run``), for drain.py's round ``round_``."""
    runs = []
    for peer, url in urls.items():
        jobs = min(n, MAX_DRAIN.get(peer, n))
        x = drain_run(peer, url, procs, workers=workers, n=jobs, batch=batch, timeout=timeout)
        log(f"round {round_ + 1}: {peer} x{workers}: {x['rate']:,.0f}/s ({jobs} jobs)")
        runs.append(x | {"round": round_})
    return runs


def drain_summary(runs: list[dict[str, Any]], processes: int) -> dict[str, Any]:
    """The peers' drains with ``processes`` workers: median rate and every run's, per peer."""
    out = {}
    for peer in PEERS:
        rates = [r["rate"] for r in runs if r["system"] == peer and r["processes"] == processes]
        if rates:
            out[peer] = {"rate": median(rates), "runs": rates}
    return out


async def _latency(
    peer: str, url: str, tail: Any, block: int, n: int, pause: Callable[[], None]
) -> list[dict[str, float]]:
    samples = []
    async with producer(peer, url) as enqueue:
        await enqueue([{"n": -1}])  # untimed: the worker has fetched once, plans are warm
        tail.wait_line(READY_TIMEOUT)
        pause()
        for i in range(n):
            await enqueue([job(i)])
            committed = time.time()
            at, seen = tail.wait_line(SEND_TIMEOUT_S).split()
            if int(seen) != i:
                raise RuntimeError(f"{peer}: expected job {i} to start, job {seen} did")
            samples.append({"commit": committed, "sent": float(at)})
            pause()
    return samples


def latency_block(
    peer: str,
    url: str,
    procs: Processes,
    tmp: Path,
    block: int,
    n: int,
    tail_of: Callable[[Path], Any],
    pause: Callable[[], None],
) -> list[dict[str, float]]:
    """n enqueues, one per transaction, to one idle ``peer`` worker: commit and handler times.

    ``tail_of`` and ``pause`` are latency.py's file follower and idle pause, so
    every system is measured the same way.
    """
    reset(peer, url)
    record = tmp / f"{peer}-{block}.txt"
    children = _start_workers(peer, url, procs, 1, batch=None, record=record)
    try:
        return asyncio.run(_latency(peer, url, tail_of(record), block, n, pause))
    finally:
        _stop(peer, procs, children)


# --- the report ------------------------------------------------------------------------------


def drain_markdown(summary: list[dict[str, Any]]) -> str:
    """The drain section's peer table (rows of drain.py's summary that have "peers")."""
    rows = [
        (
            x["processes"],
            num(x["outbox_rate"]),
            *(
                f"{num(x['peers'][p]['rate'])} ({x['outbox_rate'] / x['peers'][p]['rate']:.2f}×)"
                if p in x["peers"]
                else "not installed"
                for p in PEERS
            ),
        )
        for x in summary
        if "peers" in x
    ]
    if not rows:
        return ""
    return (
        "**Peers**, in the same rounds (each its own worker processes and database; "
        "jobs/s = N / (last completion − first pick), from its own tables; "
        "Outbox ÷ peer in brackets):\n\n"
        + md_table(["processes", "Outbox /s", *(f"{TITLES[p]} /s" for p in PEERS)], rows)
    )


def bulk_markdown(comparison: dict[str, Any]) -> str:
    systems = comparison["systems"]
    outbox = systems.get("outbox", {}).get("rate")
    rows = [
        (
            _peer_label(s, comparison),
            num(x["rate"]),
            ", ".join(num(v) for v in x["runs"]),
            f"{outbox / x['rate']:.2f}×" if outbox and s != "outbox" else "",
        )
        for s, x in systems.items()
    ]
    return (
        f"**Bulk enqueue next to the peers** ({comparison['batch']} jobs per call and "
        f"transaction, {comparison['rounds']} interleaved rounds, no worker running; "
        f"Outbox counted in deliveries):\n\n"
        + md_table(["system", "jobs/s (all rounds)", "per round", "Outbox ÷ it"], rows)
    )


def _peer_label(peer: str, comparison: dict[str, Any]) -> str:
    if peer == "outbox":
        way = comparison.get("compared", "many-address").split("-")[0]
        call = {"stream": "enqueue_stream", "many": "enqueue_many"}.get(way, "enqueue_many")
        return f"Outbox `{call}`, direct addresses"
    call = "`Queries.enqueue` (lists)" if peer == "pgqueuer" else "`batch_defer_async`"
    version = comparison.get("versions", {}).get(peer, "")
    return f"{TITLES[peer]} {version} {call}".replace("  ", " ")


# The issue-13 targets: (key, label, check). Each check takes a server's results
# (benchmark name -> result) and returns (measured text, met?) or None if not measured.
def _bulk_target(results: dict[str, Any]) -> tuple[str, bool] | None:
    c = (results.get("enqueue") or {}).get("bulk_peers")
    if not c or "pgqueuer" not in c["systems"] or "outbox" not in c["systems"]:
        return None
    ratio = c["systems"]["outbox"]["rate"] / c["systems"]["pgqueuer"]["rate"]
    text = (
        f"{num(c['systems']['outbox']['rate'])} vs {num(c['systems']['pgqueuer']['rate'])} "
        f"jobs/s = **{ratio:.2f}×**"
    )
    return text, ratio >= 1.2


def _drain_target(results: dict[str, Any]) -> tuple[str, bool] | None:
    summary = (results.get("drain") or {}).get("summary", [])
    x = next((s for s in summary if s["processes"] == 2 and "pgqueuer" in s.get("peers", {})), None)
    if x is None:
        return None
    peer = x["peers"]["pgqueuer"]["rate"]
    ratio = x["outbox_rate"] / peer
    return f"{num(x['outbox_rate'])} vs {num(peer)} jobs/s = **{ratio:.2f}×**", ratio >= 1.5


def _latency_target(results: dict[str, Any]) -> tuple[str, bool] | None:
    lat = results.get("latency") or {}
    peers = lat.get("peers", {})
    if "outbox" not in lat or not peers:
        return None
    p99 = lat["outbox"]["p99"]
    best = min(peers.items(), key=lambda kv: kv[1]["p99"])
    others = ", ".join(f"{TITLES[p]} {x['p99']:.2f}" for p, x in peers.items())
    text = f"Outbox {p99:.2f} vs {others}; bare LISTEN {lat['listen']['p99']:.2f}"
    return text, p99 < best[1]["p99"]


def _p50_target(results: dict[str, Any]) -> tuple[str, bool] | None:
    lat = results.get("latency") or {}
    if "outbox" not in lat or not lat.get("peers"):  # only from a run with the peers
        return None
    return f"{lat['outbox']['p50']:.2f}", lat["outbox"]["p50"] <= 1.6


#: The slowest adapter's rate through the sandbox when issue 13 was filed (2 workers).
ISSUE13_SLOWEST_ADAPTER_RATE = 344.0


def _adapter_vs_raw_target(results: dict[str, Any]) -> tuple[str, bool] | None:
    """Each adapter alone (benchmarks/provider_clients.py) ÷ a raw httpx client sending the
    same requests to the same sandbox in the same rounds: the lowest median must be ≥ 0.5×."""
    summary = (results.get("provider_clients") or {}).get("summary")
    if not summary:
        return None
    ratios = sorted((median(x["kinds"]["adapter"]["vs_httpx"]), x["adapter"]) for x in summary)
    (lo, lo_name), (hi, hi_name) = ratios[0], ratios[-1]
    return f"lowest {lo:.2f}× (`{lo_name}`), highest {hi:.2f}× (`{hi_name}`)", lo >= 0.5


def _slowest_adapter_target(results: dict[str, Any]) -> tuple[str, bool] | None:
    """The slowest adapter through the worker (benchmarks/providers.py, 2 processes) must
    reach 3× the slowest rate at filing."""
    runs = [
        x
        for x in (results.get("providers") or {}).get("runs", [])
        if x["processes"] == 2 and x.get("version") != "before"
    ]
    if not runs:
        return None
    slowest = min(runs, key=lambda x: x["rate"])
    ratio = slowest["rate"] / ISSUE13_SLOWEST_ADAPTER_RATE
    return (
        f"`{slowest['adapter']}` {num(slowest['rate'])}/s = **{ratio:.2f}×** "
        f"{num(ISSUE13_SLOWEST_ADAPTER_RATE)}/s",
        ratio >= 3,
    )


TARGETS: tuple[tuple[str, Callable[[dict[str, Any]], tuple[str, bool] | None]], ...] = (
    ("bulk enqueue, 1000 per transaction: Outbox ≥ 1.2× PgQueuer", _bulk_target),
    ("drain, 2 processes: Outbox ≥ 1.5× PgQueuer", _drain_target),
    ("wake-up p99 (ms): Outbox below every peer", _latency_target),
    ("wake-up p50 (ms): Outbox ≤ 1.6", _p50_target),
    ("each adapter alone ≥ 0.5× a raw httpx client, same sandbox", _adapter_vs_raw_target),
    ("slowest adapter through 2 workers ≥ 3× its rate at filing (344/s)", _slowest_adapter_target),
)


def targets_markdown(results_by_server: dict[str, dict[str, Any]]) -> str:
    """The issue-13 targets, one column per server: measured, ✅/❌ (or "not run")."""
    if not results_by_server:
        return ""
    rows = []
    for label, check in TARGETS:
        cells = []
        for results in results_by_server.values():
            got = check(results)
            cells.append("not run" if got is None else f"{got[0]} {'✅' if got[1] else '❌'}")
        rows.append((label, *cells))
    return md_table(["issue-13 target", *results_by_server], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    roles = parser.add_subparsers(dest="role", required=True)
    w = roles.add_parser("worker", help="run one peer's own worker (until SIGTERM)")
    w.add_argument("peer", choices=PEERS)
    w.add_argument("url")
    w.add_argument("--name", default=f"{APP_PREFIX}worker", help="application_name")
    w.add_argument("--batch", type=int, help="PgQueuer's batch_size (default: its own, 10)")
    w.add_argument("--record", help="append '<time.time()> <n>' per job here (else no-op)")
    args = parser.parse_args(argv)
    worker_main(args)


if __name__ == "__main__":
    main()
