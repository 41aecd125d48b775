-- Downgrade of revision 0008: outbox.create_template as 0001 defined it
-- (copied from 0001_functions_templates.sql).

-- outbox.create_template: add a version of a template and (by default) make it
-- the active one. If the content equals the newest version's, nothing is
-- created and that version's number is returned (so pushing an unchanged
-- folder of templates is a no-op).
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
    locale := coalesce(locale, 'default');

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
