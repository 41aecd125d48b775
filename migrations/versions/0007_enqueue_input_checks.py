"""Reserved: enqueue and enqueue_many refuse absurd send_at, unknown keys and badly typed values, naming the field (issue 12: I1, I2, I4).

This revision is a placeholder that changes nothing, so that the work listed
here can be written in parallel on one chain of revisions; the branch that
does the work replaces this file's body.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
