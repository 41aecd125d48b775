"""Outbox's alembic migrations (installed as ``outbox.migrations``).

:mod:`outbox.migrate` finds this folder through this package, in a checkout
(``migrations/``) and in an installed wheel alike.

Every statement a migration runs is in ``frozen/``: copies of the SQL each
revision ran, named ``<revision>_<what>.sql``, whose SHA-256 sums are pinned in
``frozen/SHA256SUMS``. The live ``sql/`` files are today's schema and may change;
a released migration must not, so migrations read only ``frozen/``, through
:func:`run_frozen`, which refuses a file that is unpinned or has changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FROZEN_DIR = Path(__file__).resolve().parent / "frozen"
MANIFEST = FROZEN_DIR / "SHA256SUMS"


class FrozenFileError(RuntimeError):
    """A migration asked for a frozen file that is not pinned, or whose bytes changed."""


def manifest() -> dict[str, str]:
    """``frozen/SHA256SUMS`` as {file name: hex digest} (``sha256sum -c`` reads it too)."""
    pinned: dict[str, str] = {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        pinned[name] = digest
    return pinned


def read_frozen(name: str) -> str:
    """The text of ``frozen/<name>``, checked against its pinned SHA-256."""
    pinned = manifest().get(name)
    if pinned is None:
        raise FrozenFileError(f"migrations/frozen/{name} is not pinned in {MANIFEST.name}")
    data = (FROZEN_DIR / name).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != pinned:
        raise FrozenFileError(
            f"migrations/frozen/{name} changed (sha256 {actual}, pinned {pinned}): a released "
            "migration never changes; put the change in a new revision"
        )
    return data.decode("utf-8")


def run_frozen(*names: str) -> None:
    """Execute the frozen files, in order, in the running migration's transaction."""
    from alembic import op

    # The driver's own connection: these scripts hold PL/pgSQL bodies with '%' and
    # ':' that SQLAlchemy's text() or pyformat would try to interpret.
    # Every file is checked before the first runs.
    scripts = [read_frozen(name) for name in names]
    driver = op.get_bind().connection.driver_connection
    assert driver is not None, "alembic gave a connection with no driver connection"
    for script in scripts:
        driver.execute(script)
