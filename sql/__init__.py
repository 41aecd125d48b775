"""The SQL that matters lives in ``sql/`` as ``.sql`` files; this module reads it.

Two kinds of file:

* installed objects (``sql/schema.sql``, ``sql/functions/*.sql``, ``sql/views.sql``),
  run by migrations;
* named queries (``sql/queries/*.sql``): blocks that start with a line
  ``-- name: <query_name>`` followed by comment lines describing it and the SQL.
  Runtime code asks for a query by name; no SQL is written in Python strings.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

# This file is sql/__init__.py in a checkout and outbox/sql/__init__.py in a wheel:
# the .sql files are its siblings either way.
SQL_DIR = Path(__file__).resolve().parent

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def read(relative_path: str) -> str:
    """The text of ``sql/<relative_path>``."""
    return (SQL_DIR / relative_path).read_text(encoding="utf-8")


def installable() -> list[tuple[str, str]]:
    """(file name, SQL) of every function and view file, in install order."""
    files = sorted((SQL_DIR / "functions").glob("*.sql")) + [SQL_DIR / "views.sql"]
    return [(str(p.relative_to(SQL_DIR)), p.read_text(encoding="utf-8")) for p in files]


@functools.cache
def queries() -> dict[str, str]:
    """Every named query in ``sql/queries/*.sql``, by name."""
    found: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        marks = list(_NAME.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = "\n".join(
                line for line in text[mark.end() : end].strip().splitlines()
                if not line.lstrip().startswith("--")
            ).strip().rstrip(";")
            if mark.group(1) in found:
                raise ValueError(f"query {mark.group(1)!r} is defined twice (second in {path.name})")
            found[mark.group(1)] = body
    return found


def query(name: str) -> str:
    """The SQL of the named query; KeyError naming it if there is none."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in {SQL_DIR / 'queries'}") from None
