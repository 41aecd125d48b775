"""The current schema (sql/, ``sql.CURRENT_SCHEMA``) is what the migrations build.

A fresh install and an upgraded one must not differ: one database is upgraded
from base one revision at a time, the other built from today's sql/ files, and
their catalogs (catalog.sql) are compared object by object. When this fails, the
diff says what to add to a new revision's frozen file, or to the current files.
"""

from __future__ import annotations

import difflib
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from outbox import migrate, sql

CATALOG = sql.named(
    (Path(__file__).parent / "catalog.sql").read_text(encoding="utf-8"),
    "tests/migration/catalog.sql",
)


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions("base", "heads")))]


def _catalog(url: str) -> dict[str, list[str]]:
    """{catalog query: its rows as lines}; a multi-line detail (a body) is indented below."""
    found: dict[str, list[str]] = {}
    with psycopg.connect(url) as conn:
        for name, query in CATALOG.items():
            lines: list[str] = []
            for obj, detail in conn.execute(query.encode("utf-8")):
                body = detail.splitlines() or [""]
                if len(body) == 1:
                    lines.append(f"{obj}: {body[0]}")
                else:
                    lines.append(f"{obj}:")
                    lines.extend(f"    {line}" for line in body)
            found[name] = lines
    return found


def _assert_same(
    expected: dict[str, list[str]],
    actual: dict[str, list[str]],
    expected_label: str,
    actual_label: str,
) -> None:
    diffs = []
    for name in CATALOG:
        if expected[name] != actual[name]:
            diffs.extend(
                difflib.unified_diff(
                    expected[name],
                    actual[name],
                    f"{expected_label} [{name}]",
                    f"{actual_label} [{name}]",
                    n=2,
                    lineterm="",
                )
            )
    if diffs:
        pytest.fail(
            f"{expected_label} and {actual_label} differ:\n" + "\n".join(diffs), pytrace=False
        )


def test_history_is_one_line_of_revisions():
    # The step-by-step upgrade below walks one line; a branch would need a merge.
    revisions = _revisions()
    assert revisions[0] == "0001"
    assert revisions[-1] == migrate.head()
    assert len(revisions) == len(set(revisions))


def test_current_schema_matches_upgrading_step_by_step(empty_db_url, current_db_url):
    for revision in _revisions():
        migrate.upgrade(empty_db_url, revision)
        assert migrate.current(empty_db_url) == revision
    upgraded, current = _catalog(empty_db_url), _catalog(current_db_url)
    # Empty sections on both sides would compare equal and prove nothing.
    assert [name for name, lines in current.items() if not lines] == []
    _assert_same(upgraded, current, "migrations 0001..head", "sql/ CURRENT_SCHEMA")


def test_each_downgrade_restores_the_previous_revision_exactly(empty_db_url):
    """Down one revision at a time from head: each step gives the catalog the upgrade had."""
    revisions = _revisions()
    seen = {"base": _catalog(empty_db_url)}
    for revision in revisions:
        migrate.upgrade(empty_db_url, revision)
        seen[revision] = _catalog(empty_db_url)
    for previous, revision in reversed(list(pairwise(["base", *revisions]))):
        migrate.downgrade(empty_db_url, previous)
        assert migrate.current(empty_db_url) == (None if previous == "base" else previous)
        _assert_same(
            seen[previous],
            _catalog(empty_db_url),
            f"upgraded to {previous}",
            f"downgraded from {revision}",
        )
    migrate.upgrade(empty_db_url)
    _assert_same(seen[revisions[-1]], _catalog(empty_db_url), "head", "head again")
