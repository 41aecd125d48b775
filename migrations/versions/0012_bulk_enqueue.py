"""Set-based enqueue_many and the streaming bulk path (issue 13).

Reserved: a no-op until the work lands (it keeps revision numbers stable while
the pieces are built in parallel).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
