"""What every benchmark shares: the server, a fresh database, child processes, numbers.

* :func:`open_server` picks the PostgreSQL the project is configured for
  (``OUTBOX_DATABASE_URL``, else the embedded server, started on demand and
  stopped again only if we started it) and describes it: version, backend,
  the settings that decide commit speed.
* :func:`fresh_database` creates a database of the benchmark's own on that
  server, migrates it to head, and drops it afterwards, whatever happens.
  No other database is ever touched.
* :class:`Processes` starts worker and helper processes and guarantees they
  end: SIGTERM, then SIGKILL after a grace period; and each child gets a
  parent-death signal, so even a ``kill -9`` of the benchmark leaves nothing
  running.
* :func:`sql` hands out the benchmarks' own SQL, kept by name in
  ``benchmarks/*.sql``: ``queries.sql`` for what several share, one file per
  benchmark for the rest (the product's SQL stays in ``sql/``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB_PREFIX = "outbox_bench_"
# Server settings worth printing next to the numbers: they decide commit cost.
SERVER_SETTINGS = (
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "max_connections",
    "max_wal_size",
    "jit",
)

T = TypeVar("T")


# --- named SQL ---------------------------------------------------------------------

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def _queries() -> dict[str, str]:
    found: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        marks = list(_NAME.finditer(text))
        for i, mark in enumerate(marks):
            name = mark.group(1)
            # One namespace for all files: a name defined twice would silently shadow.
            if name in found:
                raise ValueError(f"query {name!r} is named in both {where[name]} and {path.name}")
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = "\n".join(
                line
                for line in text[mark.end() : end].strip().splitlines()
                if not line.lstrip().startswith("--")
            )
            found[name], where[name] = body.strip().rstrip(";"), path.name
    return found


def sql(name: str) -> str:
    """The benchmark query called ``name`` in one of ``benchmarks/*.sql``."""
    try:
        return _queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in benchmarks/*.sql") from None


# --- the server ----------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` (works for URLs and key=value strings)."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@dataclass
class Server:
    """The PostgreSQL server the benchmarks run against."""

    label: str  # "service" (OUTBOX_DATABASE_URL) or "embedded"
    url: str  # its maintenance database; benchmarks only CREATE/DROP their own from it
    version: str
    backend: str  # human description: where it runs, how we reach it
    settings: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return asdict(self) | {"url": safe_url(self.url)}


def safe_url(url: str) -> str:
    """``url`` without a password, for printing."""
    params = conninfo_to_dict(url)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def _describe(label: str, url: str, backend: str) -> Server:
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                sql("server_settings"),
                [list(SERVER_SETTINGS)],
            ).fetchall()
        )
    params = conninfo_to_dict(url)
    host = params.get("host", "")
    reach = (
        f"Unix socket {host}" if host.startswith("/") else f"TCP {host}:{params.get('port', 5432)}"
    )
    return Server(
        label=label, url=url, version=version, backend=f"{backend}; {reach}", settings=settings
    )


@contextlib.contextmanager
def open_server(target: str = "configured") -> Iterator[Server]:
    """The server to benchmark, described.

    ``target``: "configured" (what the project would use: ``OUTBOX_DATABASE_URL``,
    else embedded), "service" (``OUTBOX_DATABASE_URL``, required) or "embedded"
    (the project's embedded PostgreSQL even if a URL is configured). An embedded
    server started here is stopped on exit; one that was already running is left
    as it was (other people may be using it).
    """
    from outbox.db import configured_url
    from outbox.settings import Settings

    settings = Settings()
    configured = configured_url(settings)
    if target == "service" or (target == "configured" and configured is not None):
        if configured is None:
            raise SystemExit("--target service needs OUTBOX_DATABASE_URL")
        yield _describe(
            "service",
            with_dbname(configured, "postgres"),
            "configured server (OUTBOX_DATABASE_URL)",
        )
        return
    if target not in ("configured", "embedded"):
        raise SystemExit(f"unknown target {target!r}: configured, service or embedded")
    from outbox import embedded

    data_dir = settings.data_dir
    started_here = not embedded.server_status(data_dir).running
    url = embedded.ensure_server(data_dir)
    try:
        status = embedded.server_status(data_dir)
        yield _describe(
            "embedded",
            with_dbname(url, "postgres"),
            f"embedded ({status.backend}, data dir {status.data_dir})",
        )
    finally:
        if started_here:
            embedded.stop_server(data_dir)


_BENCH_DB = re.compile(rf"^{BENCH_DB_PREFIX}[a-z0-9_]+_(\d+)_[0-9a-f]{{6}}$")


def _local(url: str) -> bool:
    host = conninfo_to_dict(url).get("host", "")
    return host.startswith("/") or host in ("", "localhost", "127.0.0.1", "::1")


def drop_stale_databases(server: Server) -> list[str]:
    """Drop benchmark databases left by benchmark processes that no longer exist.

    Only on a server on this machine (so the process id in the name is one of
    ours to check), and only names this module makes: ``outbox_bench_<purpose>_<pid>_<hex>``.
    A ``kill -9`` of a benchmark leaves its database behind; the next run removes it.
    """
    if not _local(server.url):
        return []
    dropped = []
    with psycopg.connect(server.url, autocommit=True) as admin:
        for (name,) in admin.execute(sql("benchmark_databases"), {"prefix": BENCH_DB_PREFIX}):
            m = _BENCH_DB.match(name)
            if m is None or _pid_alive(int(m.group(1))):
                continue
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            dropped.append(name)
    return dropped


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def fresh_database(server: Server, purpose: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database on ``server``, migrated to head; dropped on exit, even on Ctrl-C.

    ``migrate=False``: left empty (a peer job queue installs its own schema there).
    """
    from outbox import migrate as migrations

    for stale in drop_stale_databases(server):
        log(f"dropped {stale}, left behind by a benchmark process that no longer exists")
    name = f"{BENCH_DB_PREFIX}{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_dbname(server.url, name)
        if migrate:
            migrations.upgrade(url)
        yield url
    finally:
        # A second Ctrl-C during the drop must not leave the database behind.
        with _signals_deferred(), psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    pending: list[int] = []
    previous = {
        s: signal.signal(s, lambda n, _f: pending.append(n))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            raise KeyboardInterrupt


# --- the machine ----------------------------------------------------------------------


def _libpq_version() -> str:
    v = psycopg.pq.version()  # e.g. 170002
    return f"{v // 10000}.{v % 10000}"


def machine() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and driver versions, load average now."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gb = round(kb / 1024 / 1024, 1)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    # The benchmarks run the working tree: say whether the product code differed from HEAD.
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "status",
            "--porcelain",
            "--",
            "outbox",
            "workers",
            "sql",
            "migrations",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "libpq": _libpq_version(),
        "git_commit": commit or "unknown",
        "uncommitted_product_files": len(dirty.splitlines()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy (any process) over the next ``seconds``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_busy: float = 0.25, timeout: float = 120.0) -> float:
    """Wait (up to ``timeout`` s) until the CPUs are mostly idle; the busy fraction last seen.

    On a shared machine other people's test runs distort the numbers: better to
    start when they are done, and to print how busy it was either way.
    """
    deadline = time.monotonic() + timeout
    busy = cpu_busy()
    while busy > max_busy and time.monotonic() < deadline:
        log(f"machine {busy:.0%} busy (other processes); waiting for < {max_busy:.0%}")
        busy = cpu_busy(2.0)
    return busy


# --- child processes ----------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Child processes that are always stopped: use as a context manager.

    Children run in their own session (a terminal Ctrl-C reaches only the
    benchmark, which then stops them in order) and get SIGTERM if the benchmark
    dies without cleaning up.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        with _signals_deferred():
            self.stop_all()

    def spawn(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, name: str = "child"
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}-{len(self.children)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        for p, log in self.children:
            if p is proc:
                return log.read_text(errors="replace")
        return ""

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self, grace: float = 15.0) -> None:
        # Signal all first, so they shut down in parallel.
        for proc, _ in self.children:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc, _ in self.children:
            self.stop(proc, grace)


def worker_command(python: str | None = None) -> list[str]:
    """``outbox worker`` of this checkout, or of ``python``'s (another checkout's venv).

    ``-P``: the working directory (this checkout) is not put on that one's path.
    """
    if python:
        return [python, "-P", "-m", "outbox", "worker"]
    return [sys.executable, "-m", "outbox", "worker"]


def add_before_argument(parser: Any, help: str) -> None:
    """``--before PYTHON`` (default ``$BENCH_BEFORE_PYTHON``): another checkout's interpreter
    whose ``outbox`` runs alongside this one's, for before/after in one run."""
    parser.add_argument(
        "--before",
        metavar="PYTHON",
        default=os.environ.get("BENCH_BEFORE_PYTHON") or None,
        help=f"{help} (default: $BENCH_BEFORE_PYTHON)",
    )


def clean_env() -> dict[str, str]:
    """This environment without OUTBOX_* (a developer's own settings must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}


def worker_env(url: str, **settings: str | int | float) -> dict[str, str]:
    """Environment for an ``outbox worker`` on ``url`` with OUTBOX_<KEY> settings."""
    env = clean_env()
    env |= {"OUTBOX_DATABASE_URL": url, "OUTBOX_LOG_LEVEL": "WARNING"}
    env |= {f"OUTBOX_{k.upper()}": str(v) for k, v in settings.items()}
    return env


def agent_command(role: str, *args: str | int | float) -> list[str]:
    """Command line of a helper process of ours (see benchmarks/agents.py)."""
    return [sys.executable, "-m", "benchmarks.agents", role, *map(str, args)]


def wait_sessions(
    url: str,
    application_prefix: str,
    count: int,
    *,
    timeout: float = 30.0,
    procs: Sequence[subprocess.Popen[bytes]] = (),
    owner: Processes | None = None,
) -> None:
    """Wait until ``count`` sessions named ``application_prefix``... are idle in LISTEN.

    Fails at once if one of ``procs`` exits meanwhile (with its output, if ``owner``
    started it).
    """
    with psycopg.connect(url, autocommit=True) as conn:

        def ready() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    output = owner.output(proc)[-3000:] if owner is not None else ""
                    raise RuntimeError(
                        f"{' '.join(map(str, proc.args))} exited early with code "
                        f"{proc.returncode}\n{output}"
                    )
            n = conn.execute(sql("listening_sessions"), {"prefix": application_prefix}).fetchone()[
                0
            ]
            return n >= count

        wait_for(ready, timeout, f"{count} session(s) {application_prefix!r} listening")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Call ``check`` until it returns something truthy; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- numbers and output ------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return statistics.median(values) if values else math.nan


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(x: float, digits: int = 0) -> str:
    """A number for a table: thousands separated, ``digits`` decimals."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def terminate_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so ``finally`` blocks clean up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, handler)


def save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def standalone(
    name: str,
    doc: str | None,
    add_arguments: Callable[[Any], None],
    run: Callable[[Server, Any], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    argv: Sequence[str] | None = None,
) -> None:
    """The ``main`` of one benchmark run alone: parse options, run, print Markdown tables."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        default="configured",
        choices=["configured", "service", "embedded"],
        help="which server: what the project is configured for (default), "
        "the OUTBOX_DATABASE_URL service, or the embedded PostgreSQL",
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    add_arguments(parser)
    args = parser.parse_args(argv)
    terminate_on_sigterm()
    try:
        with open_server(args.target) as server:
            print(f"# {name} on PostgreSQL {server.version} ({server.backend})", flush=True)
            result = run(server, args)
    except KeyboardInterrupt:
        print("interrupted; processes stopped and benchmark databases dropped", file=sys.stderr)
        raise SystemExit(130) from None
    print(markdown(result))
    if args.json:
        save_json(args.json, {"server": server.describe(), "machine": machine(), name: result})


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
