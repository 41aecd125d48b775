"""Less write amplification per delivery; in-doubt counted only for started sends (13, 12 C1).

Reserved: a no-op until the work lands (it keeps revision numbers stable while
the pieces are built in parallel).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
