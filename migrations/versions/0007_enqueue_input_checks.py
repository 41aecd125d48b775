"""enqueue, enqueue_many, upsert_recipient: refuse what they let through (issue 12: I1-I4, D1).

Re-creates three producer functions (sql/functions/enqueue.sql and
upsert_recipient of sql/functions/registry.sql, frozen in
``frozen/0007_enqueue.sql`` and ``frozen/0007_upsert_recipient.sql``):

* ``outbox.enqueue`` checks the form of its arguments before it answers a repeat
  of a message id, refuses blank ids and a non-finite ``send_at``/``expires_at``,
  and, for a new message id, one more than a year from now;
* ``outbox.enqueue_many`` refuses unknown keys and badly typed values, and every
  error names the field and the item's position;
* ``outbox.upsert_recipient`` refuses a blank recipient id and stores the locale
  in the canonical case of BCP 47.

``CREATE OR REPLACE`` resets SECURITY DEFINER and the pinned search_path that
sql/roles.sql set (0003); ``frozen/0007_security_definer.sql`` puts them back
after both the upgrade and the downgrade. The downgrade restores 0001's
definitions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0007_enqueue.sql", "0007_upsert_recipient.sql", "0007_security_definer.sql")


def downgrade() -> None:
    run_frozen("0007_downgrade.sql", "0007_security_definer.sql")
