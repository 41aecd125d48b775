-- Revision 0014: one canonical form of a locale, for recipients and templates alike
-- (from sql/functions/registry.sql and sql/functions/templates.sql at 0014).
-- create_template had its own normalisation, which lower-cased a script subtag
-- (zh-hant-TW), so such a template never matched a recipient (zh-Hant-TW).

-- outbox.canonical_locale: a BCP 47 language tag in its canonical case, the one
-- form every locale column holds (recipients and template versions are matched on
-- it): language lower, script title, region upper, variants lower; '_' is read as
-- '-'. fr_ca, FR-ca and fr-CA give fr-CA; zh_hant_tw gives zh-Hant-TW; es-419 stays.
-- 'default' in any case gives 'default'. NULL for NULL, and NULL for a value that is
-- not a language tag (a language of 2 or 3 letters, then subtags of 2 to 8 letters
-- or digits): each caller raises its own error, naming its own argument.
CREATE OR REPLACE FUNCTION outbox.canonical_locale(locale text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN lower(locale) = 'default' THEN 'default'
        WHEN replace(locale, '_', '-') ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$' THEN (
            SELECT string_agg(CASE WHEN t.n = 1 THEN lower(t.part)                            -- language
                                   WHEN t.part ~ '^[A-Za-z]{4}$' THEN initcap(t.part)           -- script
                                   WHEN t.part ~ '^([A-Za-z]{2}|[0-9]{3})$' THEN upper(t.part)  -- region
                                   ELSE lower(t.part) END,                                   -- variant
                              '-' ORDER BY t.n)
            FROM unnest(string_to_array(replace(locale, '_', '-'), '-')) WITH ORDINALITY AS t(part, n))
    END
$$;

-- outbox.upsert_recipient: create or update a recipient by the app's user id.
-- A NULL argument leaves that field as it is (on update); pass '' to clear
-- email or phone. locale is a BCP 47 language tag, the format of the locale
-- columns (a language of 2 or 3 letters, then subtags of 2 to 8 letters or
-- digits: fr, fr-CA, zh-Hant-TW, es-419), or 'default'. '_' is read as '-' and
-- case is free: fr_ca, FR-ca and fr-CA are all stored in the canonical case of
-- BCP 47 (outbox.canonical_locale: language lower, script title, region upper:
-- fr-CA), the form outbox.templates.locale_chain() gives and template versions
-- are matched on.
CREATE OR REPLACE FUNCTION outbox.upsert_recipient(
    recipient    text,
    email        text DEFAULT NULL,
    phone        text DEFAULT NULL,
    locale       text DEFAULT NULL,
    timezone     text DEFAULT NULL,
    quiet_start  time DEFAULT NULL,
    quiet_end    time DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_id bigint;
BEGIN
    IF recipient IS NULL OR length(recipient) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: recipient must be 1 to 255 characters'
            USING ERRCODE = 'OB001', COLUMN = 'recipient';
    END IF;
    -- Only white space, as outbox.enqueue spells it (independent of the locale).
    IF recipient ~ '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$' THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: recipient is blank (white space only)'
            USING ERRCODE = 'OB001', COLUMN = 'recipient';
    END IF;
    IF email IS NOT NULL AND email <> ''
       AND (email !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' OR length(email) > 254) THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: email % is not a valid email address', quote_literal(email)
            USING ERRCODE = 'OB001', COLUMN = 'email';
    END IF;
    IF phone IS NOT NULL AND phone <> '' AND phone !~ '^\+[1-9][0-9]{6,14}$' THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: phone % is not an E.164 number (like +14155550123)',
            quote_literal(phone) USING ERRCODE = 'OB001', COLUMN = 'phone';
    END IF;
    IF locale IS NOT NULL THEN
        IF outbox.canonical_locale(locale) IS NULL THEN
            RAISE EXCEPTION 'outbox.upsert_recipient: locale % is not a language tag (like fr or fr-CA, or ''default'')',
                quote_literal(locale) USING ERRCODE = 'OB001', COLUMN = 'locale';
        END IF;
        locale := outbox.canonical_locale(locale);
    END IF;
    IF timezone IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = timezone) THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: unknown time zone % (use an IANA name like Europe/Paris)',
            quote_literal(timezone) USING ERRCODE = 'OB001', COLUMN = 'timezone';
    END IF;
    IF (quiet_start IS NULL) <> (quiet_end IS NULL) THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: give both quiet_start and quiet_end, or neither'
            USING ERRCODE = 'OB001', COLUMN = 'quiet_start';
    END IF;

    INSERT INTO outbox.recipients AS r (external_id, email, phone, locale, timezone, quiet_start, quiet_end)
    VALUES (recipient, nullif(email, ''), nullif(phone, ''), coalesce(locale, 'default'),
            coalesce(timezone, 'UTC'), quiet_start, quiet_end)
    ON CONFLICT ON CONSTRAINT recipients_external_id_key DO UPDATE SET
        email       = CASE WHEN email IS NULL THEN r.email ELSE nullif(email, '') END,
        phone       = CASE WHEN phone IS NULL THEN r.phone ELSE nullif(phone, '') END,
        locale      = coalesce(locale, r.locale),
        timezone    = coalesce(timezone, r.timezone),
        quiet_start = coalesce(quiet_start, r.quiet_start),
        quiet_end   = coalesce(quiet_end, r.quiet_end),
        updated_at  = now()
    RETURNING r.id INTO v_id;
    RETURN v_id;
END
$$;

-- outbox.create_template: add a version of a template and (by default) make it
-- the active one. If the content equals the newest version's, nothing is
-- created and that version's number is returned (so pushing an unchanged
-- folder of templates is a no-op). Bad input is an OB001 error naming the
-- field: a field over 256 KiB, a locale that is not a language tag (fr_CA is
-- stored as fr-CA, as upsert_recipient stores it), activate NULL. Whether the
-- template compiles is checked where the renderer is (the Python API's
-- create_template, `outbox templates push`); a version that does not compile
-- sends its deliveries to dead with the reason.
CREATE OR REPLACE FUNCTION outbox.create_template(
    key        text,
    channel    text,
    body       text,
    subject    text DEFAULT NULL,
    html_body  text DEFAULT NULL,
    title      text DEFAULT NULL,
    locale     text DEFAULT 'default',
    activate   boolean DEFAULT true
) RETURNS integer
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_hash     text;
    v_latest   outbox.templates;
    v_version  integer;
    v_field    text;
    v_bytes    integer;
    v_locale   text;
BEGIN
    IF channel IS NULL OR channel NOT IN ('email', 'sms', 'push') THEN
        RAISE EXCEPTION 'outbox.create_template: unknown channel % (expected email, sms or push)',
            coalesce(quote_literal(channel), 'NULL') USING ERRCODE = 'OB004', COLUMN = 'channel';
    END IF;
    IF key IS NULL OR key !~ '^[a-z0-9][a-z0-9_.-]{0,127}$' THEN
        RAISE EXCEPTION 'outbox.create_template: key % is not a valid name (lowercase letters, digits, _ . -)',
            coalesce(quote_literal(key), 'NULL') USING ERRCODE = 'OB001', COLUMN = 'key';
    END IF;
    IF body IS NULL OR body = '' THEN
        RAISE EXCEPTION 'outbox.create_template: body is required' USING ERRCODE = 'OB001', COLUMN = 'body';
    END IF;
    IF channel = 'email' AND coalesce(subject, '') = '' THEN
        RAISE EXCEPTION 'outbox.create_template: an email template needs a subject'
            USING ERRCODE = 'OB001', COLUMN = 'subject';
    END IF;
    IF channel <> 'email' AND (subject IS NOT NULL OR html_body IS NOT NULL) THEN
        RAISE EXCEPTION 'outbox.create_template: subject and html_body are for email templates only'
            USING ERRCODE = 'OB001', COLUMN = 'subject';
    END IF;
    IF channel <> 'push' AND title IS NOT NULL THEN
        RAISE EXCEPTION 'outbox.create_template: title is for push templates only'
            USING ERRCODE = 'OB001', COLUMN = 'title';
    END IF;
    -- outbox.template_limits.MAX_SOURCE_BYTES: no notification needs a longer
    -- template, and the renderer's limits assume none is.
    SELECT f.name, f.bytes INTO v_field, v_bytes
    FROM (VALUES (1, 'subject', octet_length(subject)), (2, 'body', octet_length(body)),
                 (3, 'html_body', octet_length(html_body)), (4, 'title', octet_length(title)))
         AS f(ord, name, bytes)
    WHERE f.bytes > 262144 ORDER BY f.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'outbox.create_template: % is % bytes, over the limit of 262144 (256 KiB)',
            v_field, v_bytes USING ERRCODE = 'OB001', COLUMN = v_field;
    END IF;
    IF activate IS NULL THEN
        RAISE EXCEPTION 'outbox.create_template: activate must be true or false, not NULL'
            USING ERRCODE = 'OB001', COLUMN = 'activate';
    END IF;
    -- As upsert_recipient does (outbox.canonical_locale): fr_CA and FR-ca are
    -- stored as fr-CA, zh_hant_tw as zh-Hant-TW, the form the claim's locale
    -- fallback compares; NULL is 'default'.
    v_locale := outbox.canonical_locale(coalesce(locale, 'default'));
    IF v_locale IS NULL THEN
        RAISE EXCEPTION 'outbox.create_template: locale % is not a language tag (like fr or fr-CA) or ''default''',
            quote_literal(locale) USING ERRCODE = 'OB001', COLUMN = 'locale';
    END IF;
    locale := v_locale;

    v_hash := outbox.template_content_hash(subject, body, html_body, title);

    -- Serialise version numbering per template without locking other templates.
    PERFORM pg_advisory_xact_lock(hashtextextended('outbox.template:' || key || ':' || channel || ':' || locale, 0));

    SELECT * INTO v_latest FROM outbox.templates t
    WHERE t.key = key AND t.channel = channel::outbox.channel AND t.locale = locale
    ORDER BY t.version DESC LIMIT 1;

    IF FOUND AND v_latest.content_hash = v_hash THEN
        RETURN v_latest.version;
    END IF;
    v_version := coalesce(v_latest.version, 0) + 1;

    IF activate THEN
        UPDATE outbox.templates t SET active = false
        WHERE t.key = key AND t.channel = channel::outbox.channel AND t.locale = locale AND t.active;
    END IF;
    INSERT INTO outbox.templates (key, channel, locale, version, subject, body, html_body, title, content_hash, active)
    VALUES (key, channel::outbox.channel, locale, v_version, subject, body, html_body, title, v_hash, activate);
    RETURN v_version;
END
$$;

-- Template versions stored before: in the canonical form too, unless a version of
-- the same key and channel is already stored in it (only a direct INSERT could have
-- made both; those are left for a person to look at).
UPDATE outbox.templates t
SET locale = outbox.canonical_locale(t.locale)
WHERE t.locale IS DISTINCT FROM outbox.canonical_locale(t.locale)
  AND outbox.canonical_locale(t.locale) IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM outbox.templates o
                  WHERE o.key = t.key AND o.channel = t.channel
                    AND o.locale = outbox.canonical_locale(t.locale));
UPDATE outbox.recipients r
SET locale = outbox.canonical_locale(r.locale)
WHERE r.locale IS DISTINCT FROM outbox.canonical_locale(r.locale)
  AND outbox.canonical_locale(r.locale) IS NOT NULL;
