"""A released migration never changes: frozen/ is pinned, and migrations read only it.

No database: this reads migrations/frozen/, its SHA256SUMS and the migration
modules' source. tests/migration/ checks what the frozen SQL builds.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from outbox import migrations

FROZEN_DIR = migrations.FROZEN_DIR
VERSIONS = Path(migrations.__file__).resolve().parent / "versions"
READERS = {"run_frozen", "read_frozen"}


def _frozen_reads(path: Path) -> list[str]:
    """The frozen files a migration module names, in order; fails on a name it computes."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in READERS:
            for arg in node.args:
                # A computed name could reach a file the manifest does not pin.
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{path.name}:{node.lineno}: frozen file names must be string literals"
                )
                names.append(arg.value)
    return names


def _migrations() -> dict[str, Path]:
    return {p.name.split("_", 1)[0]: p for p in sorted(VERSIONS.glob("[0-9]*.py"))}


def test_every_frozen_file_is_pinned_and_unchanged():
    pinned = migrations.manifest()
    on_disk = {p.name for p in FROZEN_DIR.glob("*.sql")}
    assert sorted(on_disk - pinned.keys()) == [], "frozen files missing from SHA256SUMS"
    assert sorted(pinned.keys() - on_disk) == [], "SHA256SUMS lists files that do not exist"
    changed = [
        name
        for name, digest in pinned.items()
        if hashlib.sha256((FROZEN_DIR / name).read_bytes()).hexdigest() != digest
    ]
    assert changed == [], "a released migration never changes: put the change in a new revision"


def test_manifest_is_in_sha256sum_format():
    # So that `cd migrations/frozen && sha256sum -c SHA256SUMS` checks an install by hand.
    lines = (FROZEN_DIR / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert lines == sorted(lines, key=lambda line: line[66:])
    for line in lines:
        assert re.fullmatch(r"[0-9a-f]{64}  [0-9]{4}_[a-z0-9_]+\.sql", line), line


def test_migrations_read_only_pinned_frozen_files():
    pinned = migrations.manifest()
    for revision, path in _migrations().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported = {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported = {a.name for a in node.names}
            else:
                continue
            assert not any(name.startswith("outbox.sql") for name in imported), (
                f"{path.name} imports the live sql/ files; run its frozen copies instead"
            )
        for name in _frozen_reads(path):
            assert name in pinned, f"{path.name} reads frozen/{name}, which is not pinned"
            # Its own files, or an older revision's (a downgrade restoring what that had).
            assert name.split("_", 1)[0] <= revision, f"{path.name} reads a later revision's {name}"


def test_every_frozen_file_is_run_by_the_revision_it_is_named_after():
    by_revision = {rev: _frozen_reads(path) for rev, path in _migrations().items()}
    for name in migrations.manifest():
        revision = name.split("_", 1)[0]
        assert name in by_revision.get(revision, []), f"no code of migration {revision} runs {name}"


def test_read_frozen_refuses_an_unpinned_or_changed_file(tmp_path, monkeypatch):
    copy = tmp_path / "frozen"
    shutil.copytree(FROZEN_DIR, copy)
    monkeypatch.setattr(migrations, "FROZEN_DIR", copy)
    monkeypatch.setattr(migrations, "MANIFEST", copy / "SHA256SUMS")
    assert migrations.read_frozen("0001_downgrade.sql").endswith("DROP SCHEMA outbox CASCADE;\n")

    with pytest.raises(migrations.FrozenFileError, match="0009_new.sql is not pinned"):
        migrations.read_frozen("0009_new.sql")
    with (copy / "0001_downgrade.sql").open("a", encoding="utf-8") as f:
        f.write("-- an innocent-looking comment\n")
    with pytest.raises(migrations.FrozenFileError, match="0001_downgrade.sql changed"):
        migrations.read_frozen("0001_downgrade.sql")
