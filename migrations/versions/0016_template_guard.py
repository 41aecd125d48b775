"""deliveries.template_id without a foreign key: template versions are never deleted instead.

The key's check locked the one template row every delivery of a blast shares
(FOR KEY SHARE) on each record that set template_id, so two workers recording at
once made a MultiXact per record transaction. Runs ``frozen/0016_template_guard.sql``
(the key dropped; a statement trigger refusing DELETE and TRUNCATE on
``outbox.templates``; ``template_immutable`` comparing the id too); the downgrade
drops the guard and adds the key back (it validates: no version can have gone).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from outbox.migrations import run_frozen

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0016_template_guard.sql")


def downgrade() -> None:
    run_frozen("0016_downgrade.sql")
