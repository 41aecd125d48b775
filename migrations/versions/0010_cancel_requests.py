"""A cancel that arrives while a delivery is in flight is remembered (issue 12: F1).

Before, ``outbox.cancel`` touched only pending deliveries: one a worker was
sending was left alone, and if that attempt failed transiently its retry was
sent after the application had cancelled it. Now the cancel is recorded on the
delivery (``cancel_requested_at``, ``cancel_reason``, a ``cancel_requested``
event), and when the attempt's result is recorded a success stays ``sent`` and
anything else ends ``cancelled``; lease recovery and a worker's shutdown end it
``cancelled`` too, and a CHECK constraint keeps such a delivery from ever being
pending (claimable) again. ``outbox.cancel_detailed`` (a new producer function)
returns what the cancel did: (cancelled now, in flight); ``outbox.cancel``
still returns one integer, their sum.

Runs ``frozen/0010_cancel_requests.sql``: the two columns and constraints, the
``events.kind`` check with the new kind, both functions, and their SECURITY
DEFINER setting and grants (as sql/roles.sql does, when the roles exist).
The worker's queries read the new columns: migrate, then roll the workers.

The downgrade restores 0001's ``cancel``, drops ``cancel_detailed``, the
``cancel_requested`` events and the two columns.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0010_cancel_requests.sql")


def downgrade() -> None:
    run_frozen("0010_downgrade.sql")
