"""Hashed, scoped API keys for `outbox api`, its role, and erasure of a recipient (issue 14).

Runs, in order:

* ``frozen/0011_constraints.sql``: ``events.kind`` accepts ``erased``, and
  ``rate_limits`` the scope ``api_key`` (one token bucket per key);
* ``frozen/0011_erase_recipient.sql``: ``outbox.erase_recipient`` and its helper
  ``outbox.redact`` (``sql/functions/registry.sql``);
* ``frozen/0011_api_keys.sql``: the ``outbox.api_keys`` table, every key's default
  rate limit and ``outbox.api_authenticate`` (``sql/api_keys.sql``);
* ``frozen/0011_api_roles.sql``: the ``outbox_api`` role and its grants
  (``sql/api_roles.sql``); skipped with a warning where the roles are not installed.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen(
        "0011_constraints.sql",
        "0011_erase_recipient.sql",
        "0011_api_keys.sql",
        "0011_api_roles.sql",
    )


def downgrade() -> None:
    run_frozen("0011_downgrade.sql")
