"""Initial schema: tables, functions, views in the `outbox` schema.

Runs, in order, ``frozen/0001_schema.sql``, ``0001_functions_enqueue.sql``,
``0001_functions_registry.sql``, ``0001_functions_templates.sql`` and
``0001_views.sql``: the files ``sql/schema.sql``, ``sql/functions/*.sql`` and
``sql/views.sql`` as they were when this revision was frozen.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from outbox.migrations import run_frozen

revision = "0001"
down_revision = None
branch_labels = ("outbox",)
depends_on = None


def upgrade() -> None:
    run_frozen(
        "0001_schema.sql",
        "0001_functions_enqueue.sql",
        "0001_functions_registry.sql",
        "0001_functions_templates.sql",
        "0001_views.sql",
    )


def downgrade() -> None:
    run_frozen("0001_downgrade.sql")
