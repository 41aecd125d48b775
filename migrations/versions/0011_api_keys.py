"""Reserved: hashed, scoped API keys for `outbox api` (issue 14).

This revision is a placeholder that changes nothing, so that the work listed
here can be written in parallel on one chain of revisions; the branch that
does the work replaces this file's body.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
