"""Reserved: a cancel that arrives while a delivery is in flight is remembered (issue 12: F1).

This revision is a placeholder that changes nothing, so that the work listed
here can be written in parallel on one chain of revisions; the branch that
does the work replaces this file's body.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
