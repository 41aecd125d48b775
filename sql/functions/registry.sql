-- Registration: recipients, devices, preferences. Callable from any language,
-- inside the caller's transaction. Errors use SQLSTATE class OB like enqueue.

-- outbox.upsert_recipient: create or update a recipient by the app's user id.
-- A NULL argument leaves that field as it is (on update); pass '' to clear
-- email or phone. locale is a BCP 47 language tag, the format of the locale
-- columns (a language of 2 or 3 letters, then subtags of 2 to 8 letters or
-- digits: fr, fr-CA, zh-Hant-TW, es-419), or 'default'. '_' is read as '-' and
-- case is free: fr_ca, FR-ca and fr-CA are all stored in the canonical case of
-- BCP 47 (language lower, script title, region upper: fr-CA), the form
-- outbox.templates.locale_chain() gives and template versions are matched on.
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
        IF lower(locale) = 'default' THEN
            locale := 'default';
        ELSIF replace(locale, '_', '-') ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$' THEN
            SELECT string_agg(CASE WHEN t.n = 1 THEN lower(t.part)                   -- language
                                   WHEN t.part ~ '^[A-Za-z]{4}$' THEN initcap(t.part)  -- script
                                   WHEN t.part ~ '^([A-Za-z]{2}|[0-9]{3})$' THEN upper(t.part)  -- region
                                   ELSE lower(t.part) END,                          -- variant
                              '-' ORDER BY t.n)
            INTO locale
            FROM unnest(string_to_array(replace(locale, '_', '-'), '-')) WITH ORDINALITY AS t(part, n);
        ELSE
            RAISE EXCEPTION 'outbox.upsert_recipient: locale % is not a language tag (like fr or fr-CA, or ''default'')',
                quote_literal(locale) USING ERRCODE = 'OB001', COLUMN = 'locale';
        END IF;
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
COMMENT ON FUNCTION outbox.upsert_recipient(text, text, text, text, text, time, time) IS
    'Create or update a recipient by the application''s user id; NULL leaves a field unchanged, '''' clears email/phone.';


-- outbox.register_device: add a push token for a recipient (or move it to them,
-- and reactivate it: a token belongs to whoever registered it last).
CREATE OR REPLACE FUNCTION outbox.register_device(
    recipient    text,
    token        text,
    platform     text,
    environment  text DEFAULT 'production'
) RETURNS bigint
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_recipient_id bigint;
    v_id bigint;
BEGIN
    IF platform IS NULL OR platform NOT IN ('apns', 'fcm') THEN
        RAISE EXCEPTION 'outbox.register_device: unknown platform % (expected apns or fcm)',
            coalesce(quote_literal(platform), 'NULL') USING ERRCODE = 'OB001', COLUMN = 'platform';
    END IF;
    IF environment IS NULL OR environment NOT IN ('production', 'sandbox') THEN
        RAISE EXCEPTION 'outbox.register_device: environment must be production or sandbox, got %',
            coalesce(quote_literal(environment), 'NULL') USING ERRCODE = 'OB001', COLUMN = 'environment';
    END IF;
    IF token IS NULL OR length(token) NOT BETWEEN 8 AND 4096 OR token ~ '[[:space:]]' THEN
        RAISE EXCEPTION 'outbox.register_device: token must be 8 to 4096 characters without spaces'
            USING ERRCODE = 'OB001', COLUMN = 'token';
    END IF;
    SELECT r.id INTO v_recipient_id FROM outbox.recipients r WHERE r.external_id = recipient;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.register_device: unknown recipient %', coalesce(quote_literal(recipient), 'NULL')
            USING ERRCODE = 'OB002', COLUMN = 'recipient';
    END IF;
    INSERT INTO outbox.devices AS d (recipient_id, platform, token, environment)
    VALUES (v_recipient_id, platform, token, environment)
    ON CONFLICT ON CONSTRAINT devices_token_key DO UPDATE SET
        recipient_id = excluded.recipient_id,
        platform = excluded.platform,
        environment = excluded.environment,
        active = true, deactivated_at = NULL, deactivated_reason = NULL,
        registered_at = now()
    RETURNING d.id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION outbox.register_device(text, text, text, text) IS
    'Register a push token (apns or fcm) for a recipient; re-registering moves and reactivates it.';


-- outbox.deactivate_device: stop sending to a token. Returns false if it was
-- unknown or already inactive.
CREATE OR REPLACE FUNCTION outbox.deactivate_device(token text, reason text DEFAULT 'deactivated by the application')
RETURNS boolean
LANGUAGE sql
AS $$
    WITH changed AS (
        UPDATE outbox.devices d
        SET active = false, deactivated_at = now(), deactivated_reason = coalesce($2, 'deactivated')
        WHERE d.token = $1 AND d.active
        RETURNING d.id
    )
    SELECT count(*) > 0 FROM changed;
$$;
COMMENT ON FUNCTION outbox.deactivate_device(text, text) IS 'Deactivate a push token (nothing is sent to it again until re-registered).';


-- outbox.set_preference: opt a recipient in or out of a channel, for one
-- category or for all ('*').
CREATE OR REPLACE FUNCTION outbox.set_preference(
    recipient text, channel text, opted_in boolean, category text DEFAULT '*'
) RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_recipient_id bigint;
BEGIN
    IF channel IS NULL OR channel NOT IN ('email', 'sms', 'push') THEN
        RAISE EXCEPTION 'outbox.set_preference: unknown channel % (expected email, sms or push)',
            coalesce(quote_literal(channel), 'NULL') USING ERRCODE = 'OB004', COLUMN = 'channel';
    END IF;
    IF opted_in IS NULL THEN
        RAISE EXCEPTION 'outbox.set_preference: opted_in must be true or false'
            USING ERRCODE = 'OB001', COLUMN = 'opted_in';
    END IF;
    IF category IS NULL OR (category <> '*' AND category !~ '^[a-z0-9][a-z0-9_.-]{0,63}$') THEN
        RAISE EXCEPTION 'outbox.set_preference: category % is not a valid name', coalesce(quote_literal(category), 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'category';
    END IF;
    SELECT r.id INTO v_recipient_id FROM outbox.recipients r WHERE r.external_id = recipient;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.set_preference: unknown recipient %', coalesce(quote_literal(recipient), 'NULL')
            USING ERRCODE = 'OB002', COLUMN = 'recipient';
    END IF;
    INSERT INTO outbox.preferences AS p (recipient_id, channel, category, opted_in)
    VALUES (v_recipient_id, channel::outbox.channel, category, opted_in)
    ON CONFLICT ON CONSTRAINT preferences_pkey DO UPDATE SET opted_in = excluded.opted_in, updated_at = now();
END
$$;
COMMENT ON FUNCTION outbox.set_preference(text, text, boolean, text) IS
    'Opt a recipient in or out of a channel for a category (''*'' = all categories).';


-- outbox.cancel: cancel every not-yet-sent delivery of a notification. Returns
-- how many were cancelled (0 if all were already sent or finished). A delivery a
-- worker holds right now (processing) is not touched: it may already be at the
-- provider.
CREATE OR REPLACE FUNCTION outbox.cancel(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS integer
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_notification_id bigint;
    v_count integer;
BEGIN
    SELECT n.id INTO v_notification_id FROM outbox.notifications n WHERE n.message_id = cancel.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.cancel: no notification with message_id %', coalesce(quote_literal(message_id), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'message_id';
    END IF;
    WITH cancelled AS (
        UPDATE outbox.deliveries d
        SET status = 'cancelled', last_error = coalesce(reason, 'cancelled'), finished_at = now(), updated_at = now()
        WHERE d.notification_id = v_notification_id AND d.status = 'pending'
        RETURNING d.id, d.attempts
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
        SELECT v_notification_id, c.id, 'cancelled', c.attempts, jsonb_build_object('reason', reason)
        FROM cancelled c
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM logged;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION outbox.cancel(text, text) IS 'Cancel the pending deliveries of a notification; returns how many.';
