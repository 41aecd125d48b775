"""Provider circuit breakers shared by all workers.

Installs ``sql/breaker.sql``: the ``outbox.provider_breakers`` table (one row
per provider that has failed), its ``breaker_state`` enum, and the functions
workers call, ``breaker_record`` (once per recorded batch) and
``breaker_refresh`` (every ~1 s). The rules are in
``outbox/providers/breaker.py`` and docs/providers.md.

Workers write the table, so ``outbox_worker`` (migration 0003) is granted
INSERT and UPDATE on it when that role exists; SELECT comes from 0003's
default privileges.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

from outbox import sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _execute_script(text: str) -> None:
    # Through the driver connection: PL/pgSQL bodies hold '%' that SQLAlchemy would interpret.
    op.get_bind().connection.driver_connection.execute(text)


def upgrade() -> None:
    _execute_script(sql.read("breaker.sql"))
    # Roles are optional (0003 skips them without CREATEROLE): grant only if present.
    _execute_script("""
        DO $grant$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_worker') THEN
                GRANT INSERT, UPDATE ON outbox.provider_breakers TO outbox_worker;
            END IF;
        END
        $grant$;
    """)


def downgrade() -> None:
    _execute_script("""
        DROP FUNCTION outbox.breaker_refresh(text, text[], double precision, timestamptz);
        DROP FUNCTION outbox.breaker_record(
            text, text[], integer[], integer[], integer[], text[],
            integer, double precision, double precision, timestamptz);
        DROP TABLE outbox.provider_breakers;
        DROP TYPE outbox.breaker_state;
    """)
