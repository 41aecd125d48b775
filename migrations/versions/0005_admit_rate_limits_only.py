"""The send-time re-check moves into the claim; ``outbox.admit`` keeps only rate limits.

Before: the worker claimed a batch, then called ``outbox.admit`` for it: a second
round trip on every batch, before the first send, even with no rate limit
configured. Now the claim statement (sql/queries/worker.sql) re-checks opt-outs,
suppressions and deactivated devices itself and says whether a rate limit
applies; ``outbox.admit`` (``frozen/0005_admit.sql``) only takes tokens, and is
called only for batches a limit applies to. Its arguments lose ``categories`` and
``critical``, and its result the ``verdict`` column (every row it returns is
deferred), so 0002's function is dropped first (``0005_drop_admit_0002.sql``).

Workers of the previous release call the old signature: stop them before
upgrading (the usual order: migrate, then roll the workers).

The downgrade drops this admit and reinstalls 0002's from 0002's own frozen
file: that is, byte for byte, what a database at 0004 has.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from outbox.migrations import run_frozen

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0005_drop_admit_0002.sql", "0005_admit.sql")


def downgrade() -> None:
    run_frozen("0005_downgrade.sql", "0002_admit.sql")
