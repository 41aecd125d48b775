-- Template versions. Content is immutable; one version per (key, channel,
-- locale) is active. `outbox templates push` and tests create versions through
-- these functions; a DBA may call them from psql too.

-- outbox.template_content_hash: the content hash stored with each version; the
-- same formula as outbox.templates.content_hash in Python (tests check that
-- they agree), so `outbox templates push` can tell unchanged content without
-- asking the database, and any language can reproduce it:
--   sha256 (hex) of the ASCII line 'outbox-template-v1' + newline, then for
--   each of subject, body, html_body, title either '-' (NULL) or the netstring
--   '<UTF-8 byte length>:<UTF-8 bytes>,'.
-- NULL and '' hash differently, and no two ways of splitting the same text
-- across fields give the same bytes. No newline or Unicode normalisation.
CREATE OR REPLACE FUNCTION outbox.template_content_hash(
    subject text, body text, html_body text, title text
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT encode(sha256(
        convert_to('outbox-template-v1' || E'\n', 'UTF8')
        || (SELECT string_agg(CASE WHEN f.value IS NULL THEN '\x2d'::bytea
                                   ELSE convert_to(octet_length(convert_to(f.value, 'UTF8')) || ':', 'UTF8')
                                        || convert_to(f.value, 'UTF8') || '\x2c'::bytea END,
                              ''::bytea ORDER BY f.ord)
            FROM unnest(ARRAY[subject, body, html_body, title]) WITH ORDINALITY AS f(value, ord))
    ), 'hex');
$$;
COMMENT ON FUNCTION outbox.template_content_hash(text, text, text, text) IS
    'sha256 of a template''s content: ''outbox-template-v1\n'' then per field ''-'' (NULL) or ''<bytes>:<text>,''. Same as outbox.templates.content_hash.';


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
COMMENT ON FUNCTION outbox.create_template(text, text, text, text, text, text, text, boolean) IS
    'Add a template version (activated by default); unchanged content creates nothing and returns the newest version.';


-- outbox.activate_template: make one version active (a rollback, or a roll
-- forward). The change is recorded as an event.
CREATE OR REPLACE FUNCTION outbox.activate_template(
    key text, channel text, version integer, locale text DEFAULT 'default', actor text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_target   outbox.templates;
    v_previous integer;
BEGIN
    SELECT * INTO v_target FROM outbox.templates t
    WHERE t.key = key AND t.channel::text = channel AND t.locale = coalesce(locale, 'default') AND t.version = version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.activate_template: no version % of template % (%, %)',
            version, quote_literal(key), channel, coalesce(locale, 'default')
            USING ERRCODE = 'OB003', COLUMN = 'version';
    END IF;
    SELECT t.version INTO v_previous FROM outbox.templates t
    WHERE t.key = v_target.key AND t.channel = v_target.channel AND t.locale = v_target.locale AND t.active;
    IF v_previous = v_target.version THEN
        RETURN;
    END IF;
    UPDATE outbox.templates t SET active = false
    WHERE t.key = v_target.key AND t.channel = v_target.channel AND t.locale = v_target.locale AND t.active;
    UPDATE outbox.templates t SET active = true WHERE t.id = v_target.id;
    INSERT INTO outbox.events (kind, worker, detail)
    VALUES ('template_activated', actor,
            jsonb_build_object('template', v_target.key, 'channel', v_target.channel, 'locale', v_target.locale,
                               'version', v_target.version, 'previous_version', v_previous));
END
$$;
COMMENT ON FUNCTION outbox.activate_template(text, text, integer, text, text) IS
    'Make a template version the active one (rollback or roll forward); recorded in outbox.events.';
