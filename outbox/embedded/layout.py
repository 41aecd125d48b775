"""Where a data directory keeps things, what ``server.json`` records, and its lock.

The fast path of ``ensure_server`` reads only this: the recorded state names the
socket, and the URL is built from it without starting anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from outbox.errors import DatabaseUnavailable

DATABASE = "outbox"
SUPERUSER = "postgres"  # the role initdb creates; trust auth, but only over our socket
# With no TCP listener the port only names the socket file (.s.PGSQL.5432), and
# the socket lives in a directory of its own, so this can never clash.
PORT = 5432

LOCK_TIMEOUT_SECONDS = 120.0  # several processes may queue behind one cold start (initdb)

# Longest socket path we create: sun_path is 108 bytes on Linux, 104 on macOS.
_MAX_SOCKET_PATH = 100
# unix_socket_directories is a quoted, comma-separated list; keep paths plain.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./@+-]+$")


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
