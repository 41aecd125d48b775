"""Reserved: a webhooks role, column-level grants, retention through definer functions (issue 12: L1, P1).

This revision is a placeholder that changes nothing, so that the work listed
here can be written in parallel on one chain of revisions; the branch that
does the work replaces this file's body.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
