"""The built wheel, installed into a fresh virtual environment, is a working Outbox.

This is the path a user takes (``pip install outbox``), not the editable
checkout the rest of the suite runs from: the SQL files and the migrations must
ship inside the package, ``outbox migrate`` must find them, and nothing but
``outbox`` may land at the top of site-packages.

The fresh environment gets the wheel and nothing else of this checkout. Its
third-party dependencies are borrowed from the test environment through a
``.pth`` line (a path entry, which does not run the editable install's finder),
so the test needs no network; that the wheel's declared requirements are all
met there is checked with importlib.metadata in the fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Repository folder -> where the wheel puts it (pyproject.toml's package-dir).
MAPPED = {
    "outbox": "outbox",
    "workers": "outbox/workers",
    "sql": "outbox/sql",
    "migrations": "outbox/migrations",
}


def _source_files() -> list[str]:
    """The checkout's files as a fresh clone plus the uncommitted work would have them."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    return [name for name in listed if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves build/ and *.egg-info behind, and a stale
    # build/ in the checkout would hide a file the package data globs no longer take.
    source = tmp_path_factory.mktemp("source")
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend (setuptools, a dev dependency) is already
    # here, so building needs no download.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=out,
    )
    (built,) = out.glob("outbox-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable); returns its bin/ folder."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    bin_dir = home / "bin"
    site = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return bin_dir


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OUTBOX_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    return env | extra


def test_the_wheel_holds_the_whole_package_and_nothing_else_at_the_top(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"outbox"}
    expected = {
        MAPPED[name.split("/")[0]] + name[name.index("/") :]
        for name in _source_files()
        if name.split("/")[0] in MAPPED
    }
    missing = sorted(expected - names)
    assert not missing, f"files of the checkout missing from the wheel: {missing}"


def test_the_installed_wheel_migrates_enqueues_and_sends(
    venv: Path, empty_db_url: str, tmp_path: Path
) -> None:
    env = _env(OUTBOX_DATABASE_URL=empty_db_url, OUTBOX_DATA_DIR=str(tmp_path / "data"))
    py = str(venv / "python")

    # It is the wheel that runs, from the venv's site-packages, not this checkout.
    where = subprocess.run(
        [
            py,
            "-c",
            "import json, outbox, outbox.sql, outbox.migrate, importlib.metadata as m;"
            "reqs = [r for r in m.requires('outbox') if 'extra ==' not in r];"
            "print(json.dumps({'pkg': outbox.__file__, 'sql': str(outbox.sql.SQL_DIR),"
            " 'migrations': str(outbox.migrate.MIGRATIONS_DIR), 'reqs': reqs}))",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    found = json.loads(where.stdout)
    site = str(venv.parent)
    assert found["pkg"].startswith(site) and found["sql"].startswith(site)
    assert found["migrations"].startswith(site)
    assert not found["pkg"].startswith(str(ROOT))
    unmet = subprocess.run(
        [
            py,
            "-c",
            "import importlib.metadata as m, sys\n"
            "from packaging.requirements import Requirement\n"
            "bad = []\n"
            "for r in map(Requirement, sys.argv[1:]):\n"
            "    try:\n"
            "        v = m.version(r.name)\n"
            "    except m.PackageNotFoundError:\n"
            "        bad.append(str(r)); continue\n"
            "    if not r.specifier.contains(v, prereleases=True): bad.append(f'{r} ({v})')\n"
            "print('\\n'.join(bad))",
            *found["reqs"],
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    assert not unmet, f"the wheel's requirements are not met: {unmet}"

    version = subprocess.run(
        [str(venv / "outbox"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("outbox 0.") and "schema revision needed" in version.stdout

    migrate = subprocess.run(
        [str(venv / "outbox"), "migrate"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    enqueue = (
        "import psycopg, outbox, sys\n"
        "with psycopg.connect(sys.argv[1]) as conn:\n"
        "    outbox.create_template(conn, 'hello', 'email', 'Hi {{ name }}', subject='Hello')\n"
        "    outbox.enqueue(conn, 'from-the-wheel', address='ada@example.com',\n"
        "                   channels=['email'], template='hello', data={'name': 'Ada'})\n"
        "    conn.commit()\n"
    )
    subprocess.run([py, "-c", enqueue, empty_db_url], check=True, env=env, cwd=tmp_path, timeout=60)

    worker = subprocess.Popen(
        [str(venv / "outbox"), "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            with psycopg.connect(empty_db_url) as conn:
                row = conn.execute(
                    "SELECT d.status::text FROM outbox.deliveries d"
                    " JOIN outbox.notifications n ON n.id = d.notification_id"
                    " WHERE n.message_id = 'from-the-wheel'"
                ).fetchone()
            status = row[0] if row else None
            if status == "sent":
                break
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert status == "sent", f"delivery ended {status!r}; worker stderr:\n{err}"
    assert worker.returncode == 0, err
    assert "[outbox console] email -> ada@example.com message_id=from-the-wheel" in out
