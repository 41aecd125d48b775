"""Least privilege: a webhooks role, column-level grants, retention through definer functions.

Issue 12, findings L1 and P1. Runs ``frozen/0009_retention.sql`` (``sql/retention.sql``:
the SECURITY DEFINER functions that are now the only way history is deleted,
and the trigger that refuses any other DELETE on events) and
``frozen/0009_roles.sql`` (the ``sql/roles.sql`` statements of this revision):

* ``outbox_worker`` may update only the delivery and device columns it writes,
  deletes nothing but through the retention functions, and may append only the
  events it records (row security on ``outbox.events``);
* a new ``outbox_webhooks`` role, for the internet-facing receipt receiver, may
  do what ``sql/queries/receipts.sql`` needs and nothing more.

After this revision the receiver needs a login in ``outbox_webhooks``
(``OUTBOX_WEBHOOKS_DATABASE_URL``, docs/webhooks.md); it refuses to start as a
role that may not apply receipts.

The downgrade (``0009_downgrade.sql``) restores the privileges of 0008 and drops
the functions and the trigger; the role stays (roles are cluster-wide).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0009_retention.sql", "0009_roles.sql")


def downgrade() -> None:
    run_frozen("0009_downgrade.sql")
