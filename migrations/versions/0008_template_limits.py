"""Reserved: create_template refuses oversize sources and bad locale/activate values (issue 12: I4, I5).

This revision is a placeholder that changes nothing, so that the work listed
here can be written in parallel on one chain of revisions; the branch that
does the work replaces this file's body.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
