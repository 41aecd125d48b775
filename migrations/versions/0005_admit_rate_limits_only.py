"""The send-time re-check moves into the claim; ``outbox.admit`` keeps only rate limits.

Before: the worker claimed a batch, then called ``outbox.admit`` for it: a second
round trip on every batch, before the first send, even with no rate limit
configured. Now the claim statement (sql/queries/worker.sql) re-checks opt-outs,
suppressions and deactivated devices itself and says whether a rate limit
applies; ``outbox.admit`` (sql/admit.sql) only takes tokens, and is called only
for batches a limit applies to. Its arguments lose ``categories`` and
``critical``, and its result the ``verdict`` column (every row it returns is
deferred).

Workers of the previous release call the old signature: stop them before
upgrading (the usual order: migrate, then roll the workers).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from alembic import op

from outbox import sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_SIGNATURE = "bigint[], bigint[], text[], text[], boolean[], text[], text[], timestamptz, integer"
NEW_SIGNATURE = "bigint[], bigint[], text[], text[], text[], timestamptz, integer"


def _execute_script(text: str) -> None:
    # Through the driver connection: PL/pgSQL bodies hold '%' that SQLAlchemy would interpret.
    op.get_bind().connection.driver_connection.execute(text)


def upgrade() -> None:
    _execute_script(f"DROP FUNCTION outbox.admit({OLD_SIGNATURE})")
    _execute_script(sql.read("admit.sql"))


def downgrade() -> None:
    _execute_script(f"DROP FUNCTION outbox.admit({NEW_SIGNATURE})")
    _execute_script(sql.read("history/admit_0002.sql"))
