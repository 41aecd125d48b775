"""Migrations: up, down, up; own version table; documented schema."""

from __future__ import annotations

import psycopg

from outbox import migrate


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as c:
        return [
            r[0]
            for r in c.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'outbox' "
                "AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]


def test_up_down_up(empty_db_url):
    migrate.upgrade(empty_db_url)
    assert migrate.current(empty_db_url) == migrate.head()
    assert {
        "recipients",
        "devices",
        "preferences",
        "templates",
        "notifications",
        "deliveries",
        "events",
    } <= set(_tables(empty_db_url))
    migrate.downgrade(empty_db_url, "base")
    assert migrate.current(empty_db_url) is None
    assert _tables(empty_db_url) == []
    migrate.upgrade(empty_db_url)
    assert migrate.current(empty_db_url) == migrate.head()


def test_upgrade_is_idempotent_and_uses_its_own_version_table(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        # An application's own alembic table is left alone.
        c.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        c.execute("INSERT INTO public.alembic_version VALUES ('app_rev_1')")
    migrate.upgrade(empty_db_url)
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as c:
        assert c.execute("SELECT version_num FROM public.alembic_version").fetchall() == [
            ("app_rev_1",)
        ]
        assert c.execute("SELECT version_num FROM public.outbox_alembic_version").fetchall() == [
            (migrate.head(),)
        ]


def test_every_table_and_column_is_commented(db_url):
    """`\\d+` in psql explains the schema: every table, view and column has a comment."""
    with psycopg.connect(db_url) as c:
        missing = c.execute("""
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'outbox' AND c.relkind IN ('r', 'v')
              AND obj_description(c.oid, 'pg_class') IS NULL
            UNION ALL
            SELECT c.relname || '.' || a.attname
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = 'outbox' AND c.relkind = 'r'
              AND a.attname NOT IN ('id', 'created_at', 'updated_at')
              AND col_description(c.oid, a.attnum) IS NULL
            ORDER BY 1
        """).fetchall()
    assert [m[0] for m in missing] == []


def test_downgrading_0016_keeps_rows_and_restores_the_template_key(empty_db_url):
    """0016 drops deliveries.template_id's foreign key; its downgrade adds it back
    (it validates, since no version could be deleted) and keeps every row."""
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as c:
        c.execute(
            "INSERT INTO outbox.templates (key, channel, version, body, content_hash, active) "
            "VALUES ('t', 'email', 1, 'b', 'h', true)"
        )
        c.execute("SELECT outbox.enqueue('m-1', address => 'a@example.com', template => 't')")
        c.execute("UPDATE outbox.deliveries SET template_id = (SELECT id FROM outbox.templates)")
    migrate.downgrade(empty_db_url, "0015")
    with psycopg.connect(empty_db_url) as c:
        assert c.execute(
            "SELECT count(*) FROM outbox.deliveries d "
            "JOIN outbox.templates t ON t.id = d.template_id"
        ).fetchone() == (1,)
        assert c.execute(
            "SELECT confdeltype FROM pg_constraint WHERE conname = 'deliveries_template_id_fkey'"
        ).fetchone() == ("a",)
        c.execute("DELETE FROM outbox.templates WHERE false")  # the guard is gone
    migrate.upgrade(empty_db_url)
