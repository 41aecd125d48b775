"""Least-privilege roles: outbox_producer, outbox_worker, outbox_reader.

Installs ``sql/roles.sql`` (what each role may do, and why the producer
functions become SECURITY DEFINER, is explained there and in
docs/operations.md, "Roles"). Roles are cluster-wide: they are created only if
missing, and a runner without CREATEROLE gets a warning instead of roles.

The downgrade (``sql/roles_revoke.sql``) revokes what the roles were granted in
this database and restores the functions as 0001 made them, but does not drop
the roles: other databases of the server, and login roles, may use them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

from outbox import sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _execute_script(text: str) -> None:
    # Through the driver connection: PL/pgSQL bodies hold '%' that SQLAlchemy would interpret.
    op.get_bind().connection.driver_connection.execute(text)


def upgrade() -> None:
    _execute_script(sql.read("roles.sql"))


def downgrade() -> None:
    _execute_script(sql.read("roles_revoke.sql"))
