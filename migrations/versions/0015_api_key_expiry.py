"""API keys may expire: ``api_keys.expires_at``, refused by ``outbox.api_authenticate`` after it.

``outbox api-keys create --expires-in 90d`` sets it; ``list`` shows it. Runs
``frozen/0015_api_key_expiry.sql`` (the column and the function, from
sql/api_keys.sql); the downgrade puts back 0011's function and drops the column.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0015_api_key_expiry.sql")


def downgrade() -> None:
    run_frozen("0015_downgrade.sql")
