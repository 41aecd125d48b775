"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from outbox.migrations import run_frozen
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


# Name the frozen files (migrations/frozen/, pinned in SHA256SUMS) this revision runs;
# run_frozen refuses a name that is not pinned, so this fails until they exist.
def upgrade() -> None:
    run_frozen("${up_revision}_CHANGE_ME.sql")


def downgrade() -> None:
    run_frozen("${up_revision}_downgrade.sql")
