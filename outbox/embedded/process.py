"""Which server processes are alive: postmaster.pid checked against /proc.

Without /proc (macOS) the checks fall back to kill(pid, 0).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from outbox.embedded.layout import _Layout


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
