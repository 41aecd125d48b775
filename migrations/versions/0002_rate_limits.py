"""Rate limits (token buckets shared by all workers) and the send-time admission check.

Installs ``sql/ratelimit.sql``: the ``rate_limits`` table a DBA edits, the
``rate_buckets`` state, and the functions ``take_tokens``, ``prune_rate_buckets``,
``admit`` (and the helper ``token_wait_us``).

It also reinstalls ``sql/functions/templates.sql``, whose content hash now uses
the same formula as ``outbox.templates.content_hash``, and rehashes the versions
already stored, so that pushing unchanged templates stays a no-op across the
upgrade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

from outbox import sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _execute_script(text: str) -> None:
    # Run through the driver connection: these scripts hold PL/pgSQL bodies with
    # '%' and ':' that SQLAlchemy's text() or pyformat would try to interpret.
    op.get_bind().connection.driver_connection.execute(text)


def upgrade() -> None:
    _execute_script(sql.read("ratelimit.sql"))
    _execute_script(sql.read("history/admit_0002.sql"))
    _execute_script(sql.read("functions/templates.sql"))
    # Versions are immutable (a trigger refuses any change to their content); the
    # hash is a derived value whose formula changed, so the trigger is lifted for
    # this one statement, inside the migration's transaction.
    _execute_script("""
        ALTER TABLE outbox.templates DISABLE TRIGGER templates_immutable;
        UPDATE outbox.templates
        SET content_hash = outbox.template_content_hash(subject, body, html_body, title)
        WHERE content_hash IS DISTINCT FROM
              outbox.template_content_hash(subject, body, html_body, title);
        ALTER TABLE outbox.templates ENABLE TRIGGER templates_immutable;
    """)


def downgrade() -> None:
    # The template functions stay: revision 0001 installs the current
    # sql/functions/ files, so they are what a database at 0001 has.
    _execute_script("""
        DROP FUNCTION outbox.admit(bigint[], bigint[], text[], text[], boolean[], text[], text[],
                                   timestamptz, integer);
        DROP FUNCTION outbox.prune_rate_buckets(integer, timestamptz);
        DROP FUNCTION outbox.take_tokens(integer[], text[], text[], text[], timestamptz);
        DROP FUNCTION outbox.token_wait_us(double precision, double precision, double precision);
        DROP TABLE outbox.rate_buckets;
        DROP TABLE outbox.rate_limits;
    """)
