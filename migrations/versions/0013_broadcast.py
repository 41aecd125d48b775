"""Topics, subscriptions and broadcast to a segment (issue 13).

Reserved: a no-op until the work lands (it keeps revision numbers stable while
the pieces are built in parallel).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
