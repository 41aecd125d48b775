"""create_template refuses oversize sources and bad locale/activate values (issue 12: I4, I5).

``outbox.create_template`` gives an OB001 error naming the field for a field
over 256 KiB (``outbox.template_limits.MAX_SOURCE_BYTES``), a locale that is
not a language tag, and ``activate => NULL``, instead of storing the template
or failing on a raw CHECK / NOT NULL violation; ``fr_CA`` is stored as
``fr-CA``, as ``upsert_recipient`` stores it. Runs
``frozen/0008_create_template.sql`` (the function from
``sql/functions/templates.sql``); the downgrade restores 0001's definition.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0008_create_template.sql")


def downgrade() -> None:
    # 0001 (rerun by 0002) was the last revision to define the template functions.
    run_frozen("0001_functions_templates.sql")
