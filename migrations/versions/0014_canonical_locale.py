"""One canonical form of a locale for recipients and templates (outbox.canonical_locale).

``create_template`` normalised locales on its own and lower-cased a script subtag
(``zh_hant_tw`` became ``zh-hant-TW``) where ``upsert_recipient`` stores
``zh-Hant-TW``, so such a template never matched its recipients. Both now call
``outbox.canonical_locale`` (sql/functions/registry.sql). Runs
``frozen/0014_canonical_locale.sql`` (the function, both callers, and the stored
locales put in that form), then ``frozen/0007_security_definer.sql`` (CREATE OR
REPLACE reset upsert_recipient's SECURITY DEFINER where the roles had set it).
The downgrade reruns 0007's upsert_recipient and 0008's create_template and drops
the function; stored locales keep the canonical form.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from outbox.migrations import run_frozen

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0014_canonical_locale.sql", "0007_security_definer.sql")


def downgrade() -> None:
    run_frozen(
        "0007_upsert_recipient.sql",
        "0008_create_template.sql",
        "0014_downgrade.sql",
        "0007_security_definer.sql",
    )
