"""Rate limits (token buckets shared by all workers) and the send-time admission check.

``frozen/0002_ratelimit.sql``: the ``rate_limits`` table a DBA edits, the
``rate_buckets`` state, and the functions ``take_tokens``, ``prune_rate_buckets``
and the helper ``token_wait_us``; ``0002_admit.sql``: ``admit`` as this revision
had it (migration 0005 replaced it).

It also reinstalls the template functions, whose content hash now uses the
same formula as ``outbox.templates.content_hash``, and rehashes the versions
already stored (``0002_rehash_templates.sql``), so that pushing unchanged
templates stays a no-op across the upgrade. Nothing had been released when the
history was frozen, so what it reinstalls is 0001's own file,
``0001_functions_templates.sql``, run again rather than copied.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from outbox.migrations import run_frozen

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen(
        "0002_ratelimit.sql",
        "0002_admit.sql",
        "0001_functions_templates.sql",
        "0002_rehash_templates.sql",
    )


def downgrade() -> None:
    run_frozen("0002_downgrade.sql")
