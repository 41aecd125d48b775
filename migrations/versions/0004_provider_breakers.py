"""Provider circuit breakers shared by all workers.

Runs ``frozen/0004_breaker.sql`` (``sql/breaker.sql`` when frozen): the
``outbox.provider_breakers`` table (one row per provider that has failed), its
``breaker_state`` enum, and the functions workers call, ``breaker_record`` (once
per recorded batch) and ``breaker_refresh`` (every ~1 s). The rules are in
``outbox/providers/breaker.py`` and docs/providers.md.

Workers write the table, so ``0004_grants.sql`` grants ``outbox_worker``
(migration 0003) INSERT and UPDATE on it when that role exists; SELECT comes
from 0003's default privileges.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from outbox.migrations import run_frozen

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0004_breaker.sql", "0004_grants.sql")


def downgrade() -> None:
    run_frozen("0004_downgrade.sql")
