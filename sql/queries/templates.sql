-- Queries behind `outbox templates` (outbox/cli/templates.py). Writes go through
-- the SQL functions outbox.create_template and outbox.activate_template (see
-- api.sql), so the CLI and a DBA in psql pass the same checks.

-- name: template_heads
-- Newest version and active version of every (key, channel, locale) of the given
-- keys: what `push` compares a folder's content with.
SELECT t.key, t.channel::text AS channel, t.locale,
       max(t.version) AS latest,
       (array_agg(t.content_hash ORDER BY t.version DESC))[1] AS latest_hash,
       max(t.version) FILTER (WHERE t.active) AS active
FROM outbox.templates t
WHERE t.key = ANY (%(keys)s::text[])
GROUP BY t.key, t.channel, t.locale;

-- name: template_summary
-- One line per (key, channel, locale): active and newest version, how many
-- versions, when the newest was created. %(key)s NULL: every template.
SELECT t.key, t.channel::text AS channel, t.locale,
       max(t.version) FILTER (WHERE t.active) AS active,
       max(t.version) AS latest,
       count(*) AS versions,
       max(t.created_at) AS updated_at
FROM outbox.templates t
WHERE %(key)s::text IS NULL OR t.key = %(key)s::text
GROUP BY t.key, t.channel, t.locale
ORDER BY t.key, t.channel, t.locale;

-- name: template_versions
-- Every stored version of a template, with its content, newest first; each
-- filter is ignored when NULL.
SELECT t.id, t.key, t.channel::text AS channel, t.locale, t.version, t.active,
       t.subject, t.body, t.html_body, t.title, t.content_hash, t.created_at
FROM outbox.templates t
WHERE t.key = %(key)s::text
  AND (%(channel)s::text IS NULL OR t.channel::text = %(channel)s::text)
  AND (%(locale)s::text IS NULL OR t.locale = %(locale)s::text)
  AND (%(version)s::integer IS NULL OR t.version = %(version)s::integer)
ORDER BY t.channel, t.locale, t.version DESC;

-- name: template_active_for_locales
-- The active version of a template for a channel, trying the locales in the
-- given order (the recipient's locale chain, fr-CA -> fr -> default) and taking
-- the first that has one: what a send would render.
SELECT t.id, t.key, t.channel::text AS channel, t.locale, t.version, t.active,
       t.subject, t.body, t.html_body, t.title, t.content_hash, t.created_at
FROM outbox.templates t
JOIN unnest(%(locales)s::text[]) WITH ORDINALITY AS l(locale, rank) ON l.locale = t.locale
WHERE t.key = %(key)s::text AND t.channel::text = %(channel)s::text AND t.active
ORDER BY l.rank
LIMIT 1;
