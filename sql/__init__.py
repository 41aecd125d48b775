"""The SQL that matters lives in ``sql/`` as ``.sql`` files; this module reads it.

Two kinds of file:

* the current schema: the files listed in :data:`CURRENT_SCHEMA`, in the order
  that builds it from scratch (:func:`install_current`). They are today's schema,
  not its history: migrations run their own frozen copies (migrations/frozen/), and
  tests/migration/ checks that both build the same catalog;
* named queries (``sql/queries/*.sql``): blocks that start with a line
  ``-- name: <query_name>`` followed by comment lines describing it and the SQL.
  Runtime code asks for a query by name; no SQL is written in Python strings.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

# This file is sql/__init__.py in a checkout and outbox/sql/__init__.py in a wheel:
# the .sql files are its siblings either way.
SQL_DIR = Path(__file__).resolve().parent

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def read(relative_path: str) -> str:
    """The text of ``sql/<relative_path>``."""
    return (SQL_DIR / relative_path).read_text(encoding="utf-8")


# Order matters where one file acts on what another created: roles.sql grants on
# every table and function (the retention functions included) and alters the
# producer functions, so it comes after them, and breaker_grants.sql needs both
# the breaker table and the roles; api_keys.sql comes after roles.sql so that its
# table gets the default privileges a migrated one gets, which api_roles.sql then
# narrows.
CURRENT_SCHEMA: tuple[str, ...] = (
    "schema.sql",
    "functions/enqueue.sql",
    "functions/registry.sql",
    "functions/templates.sql",
    "functions/broadcast.sql",
    "views.sql",
    "ratelimit.sql",
    "admit.sql",
    "breaker.sql",
    "retention.sql",
    "roles.sql",
    "breaker_grants.sql",
    "api_keys.sql",
    "api_roles.sql",
)


def install_current(conn: psycopg.Connection[Any]) -> None:
    """Build today's ``outbox`` schema from scratch on ``conn``, in its transaction.

    What ``outbox migrate`` reaches step by step, in one go, for an empty
    database; it records no alembic revision, so it is for tests and for reading,
    not a way to install Outbox.
    """
    for name in CURRENT_SCHEMA:
        # No parameters: psycopg sends each file as one simple query, so a file may
        # hold many statements and PL/pgSQL bodies with '%'.
        conn.execute(read(name).encode("utf-8"))


def named(text: str, source: str = "<text>") -> dict[str, str]:
    """The named blocks of one ``.sql`` text, by name, without their comment lines.

    ``source`` names the text in the error raised for a name defined twice. Also
    used by tests that keep their own queries next to them.
    """
    found: dict[str, str] = {}
    marks = list(_NAME.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = (
            "\n".join(
                line
                for line in text[mark.end() : end].strip().splitlines()
                if not line.lstrip().startswith("--")
            )
            .strip()
            .rstrip(";")
        )
        if mark.group(1) in found:
            raise ValueError(f"query {mark.group(1)!r} is defined twice in {source}")
        found[mark.group(1)] = body
    return found


@functools.cache
def queries() -> dict[str, str]:
    """Every named query in ``sql/queries/*.sql``, by name."""
    found: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        for name, body in named(path.read_text(encoding="utf-8"), path.name).items():
            if name in found:
                raise ValueError(f"query {name!r} is defined twice (second in {path.name})")
            found[name] = body
    return found


def query(name: str) -> str:
    """The SQL of the named query; KeyError naming it if there is none."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in {SQL_DIR / 'queries'}") from None
