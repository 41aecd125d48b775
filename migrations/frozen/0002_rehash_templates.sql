-- Migration 0002, after the template functions are reinstalled
-- (0001_functions_templates.sql, run again): rehash the stored template versions
-- with the new formula, so that pushing unchanged templates stays a no-op across
-- the upgrade.
--
-- Versions are immutable (a trigger refuses any change to their content); the
-- hash is a derived value whose formula changed, so the trigger is lifted for
-- this one statement, inside the migration's transaction.
ALTER TABLE outbox.templates DISABLE TRIGGER templates_immutable;
UPDATE outbox.templates
SET content_hash = outbox.template_content_hash(subject, body, html_body, title)
WHERE content_hash IS DISTINCT FROM
      outbox.template_content_hash(subject, body, html_body, title);
ALTER TABLE outbox.templates ENABLE TRIGGER templates_immutable;
