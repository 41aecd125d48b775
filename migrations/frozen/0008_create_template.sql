-- Revision 0008: outbox.create_template refuses a field over 256 KiB, an invalid
-- locale and activate NULL with an OB001 error naming the field, and stores fr_CA
-- as fr-CA (copied from sql/functions/templates.sql).

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
    -- As upsert_recipient does: fr_CA and FR-ca are stored as fr-CA, the form the
    -- claim's locale fallback compares; NULL is 'default'.
    v_locale := CASE WHEN lower(coalesce(locale, 'default')) = 'default' THEN 'default'
                     ELSE lower(replace(locale, '_', '-')) END;
    IF v_locale !~ '^(default|[a-z]{2,3}(-[a-z0-9]{2,8})*)$' THEN
        RAISE EXCEPTION 'outbox.create_template: locale % is not a language tag (like fr or fr-CA) or ''default''',
            quote_literal(locale) USING ERRCODE = 'OB001', COLUMN = 'locale';
    END IF;
    locale := CASE WHEN v_locale ~ '-[a-z]{2}$'
                   THEN substr(v_locale, 1, length(v_locale) - 2) || upper(right(v_locale, 2))
                   ELSE v_locale END;

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
