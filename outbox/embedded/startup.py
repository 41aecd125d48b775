"""The slow path: initialise the cluster, start the server, create the database.

Runs under the data dir's lock (``layout._locked``), after the fast path found
no server answering.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from outbox.embedded.binaries import _Binaries, _select_binaries
from outbox.embedded.layout import (
    DATABASE,
    PORT,
    SUPERUSER,
    _Layout,
    _read_state,
    _State,
    _write_state,
)
from outbox.embedded.output import _read_log, _tail
from outbox.embedded.probe import _probe
from outbox.embedded.process import _pid_exists, _postmaster_pid
from outbox.embedded.run_as import (
    _chown,
    _make_private_dir,
    _prepare_dirs,
    _run,
    _run_as,
    _RunAs,
)
from outbox.errors import DatabaseUnavailable

log = logging.getLogger("outbox.embedded")  # one logger for the package, as before the split

START_TIMEOUT_SECONDS = 60
ANSWER_WAIT_SECONDS = 30.0  # a server found starting up or shutting down gets this long

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
