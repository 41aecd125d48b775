-- Revision 0014's downgrade: after 0007's upsert_recipient and 0008's
-- create_template are back (their own frozen files), the shared function goes.
-- Locales stay in the canonical form: the earlier functions match them as well.
DROP FUNCTION outbox.canonical_locale(text);
