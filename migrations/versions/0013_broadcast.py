"""Topics, subscriptions and broadcast to a segment (issue 13).

Runs, in order:

* ``frozen/0013_schema.sql``: the tables ``outbox.topics``, ``outbox.subscriptions``
  and ``outbox.broadcasts``, and ``outbox.notifications.broadcast_id`` with the
  unique index that keeps one notification per (broadcast, recipient)
  (``sql/schema.sql``);
* ``frozen/0013_cancel_notifications.sql``: ``outbox.cancel_detailed``'s work
  moved into ``outbox.cancel_notifications``, which ``cancel_broadcast`` shares
  (``sql/functions/registry.sql``);
* ``frozen/0013_broadcast.sql``: create_topic, subscribe, unsubscribe, broadcast,
  broadcast_list, broadcast_segment, cancel_broadcast and their helpers
  (``sql/functions/broadcast.sql``);
* ``frozen/0013_roles.sql``: their grants (``sql/roles.sql``, ``sql/api_roles.sql``),
  and SECURITY DEFINER put back on the re-created ``cancel_detailed``.

The downgrade drops them and restores 0010's ``cancel_detailed``; notifications
enqueued by broadcasts stay as ordinary notifications.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen(
        "0013_schema.sql",
        "0013_cancel_notifications.sql",
        "0013_broadcast.sql",
        "0013_roles.sql",
    )


def downgrade() -> None:
    run_frozen("0013_downgrade.sql", "0013_roles.sql")
