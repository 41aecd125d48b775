"""Initial schema: tables, functions, views in the `outbox` schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

from outbox import sql

revision = "0001"
down_revision = None
branch_labels = ("outbox",)
depends_on = None


def _execute_script(text: str) -> None:
    # Run through the driver connection: these scripts hold PL/pgSQL bodies with
    # '%' and ':' that SQLAlchemy's text() or pyformat would try to interpret.
    op.get_bind().connection.driver_connection.execute(text)


def upgrade() -> None:
    _execute_script(sql.read("schema.sql"))
    for _name, text in sql.installable():
        _execute_script(text)


def downgrade() -> None:
    _execute_script("DROP SCHEMA outbox CASCADE")
