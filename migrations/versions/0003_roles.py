"""Least-privilege roles: outbox_producer, outbox_worker, outbox_reader.

Runs ``frozen/0003_roles.sql`` (``sql/roles.sql`` when frozen: what each role may
do, and why the producer functions become SECURITY DEFINER, is explained there
and in docs/operations.md, "Roles"). Roles are cluster-wide: they are created
only if missing, and a runner without CREATEROLE gets a warning instead of roles.

The downgrade (``0003_roles_revoke.sql``) revokes what the roles were granted in
this database and restores the functions as 0001 made them, but does not drop
the roles: other databases of the server, and login roles, may use them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from outbox.migrations import run_frozen

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0003_roles.sql")


def downgrade() -> None:
    run_frozen("0003_roles_revoke.sql")
