"""The outbox roles may read the schema revision (``outbox_alembic_version``).

Workers, the webhook receiver and the CLI check the revision at start-up
(``outbox.migrate.check``) and refuse a schema they were not built for; under
the least-privilege roles of 0003 they could not read it, and only checked
that the schema exists. Runs ``frozen/0006_version_grants.sql`` (the block at
the end of ``sql/roles.sql``); grants only to the roles that exist.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0006_version_grants.sql")


def downgrade() -> None:
    run_frozen("0006_downgrade.sql")
