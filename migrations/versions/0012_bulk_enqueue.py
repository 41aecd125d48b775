"""Set-based enqueue: one core under enqueue and enqueue_many, for bulk paths (issue 13).

Runs ``frozen/0012_enqueue.sql`` (``sql/functions/enqueue.sql``): the row type
``outbox.enqueue_item`` and ``outbox.enqueue_items``, which checks and writes a
whole set of notifications with one INSERT ... SELECT per table; ``outbox.enqueue``
and ``outbox.enqueue_many`` re-created on it (no loop per item), and
``outbox.timestamptz_problem`` for enqueue_many's timestamps. Then
``frozen/0007_security_definer.sql`` pins enqueue and enqueue_many again (CREATE
OR REPLACE resets SECURITY DEFINER) and ``frozen/0012_grants.sql`` gives
enqueue_items what the roles give every producer function.

The downgrade restores 0007's enqueue and enqueue_many, drops what 0012 added and
pins them again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0012_enqueue.sql", "0007_security_definer.sql", "0012_grants.sql")


def downgrade() -> None:
    run_frozen("0007_enqueue.sql", "0012_downgrade.sql", "0007_security_definer.sql")
