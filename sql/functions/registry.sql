-- Registration: recipients, devices, preferences. Callable from any language,
-- inside the caller's transaction. Errors use SQLSTATE class OB like enqueue.

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


-- outbox.cancel_notifications: what outbox.cancel_detailed does (below), for
-- every notification in `notification_ids` at once (outbox.cancel_broadcast
-- cancels a whole broadcast with it); the counts are summed. One NOTIFY
-- outbox_cancel per notification with a delivery in flight.
CREATE OR REPLACE FUNCTION outbox.cancel_notifications(notification_ids bigint[], reason text)
RETURNS TABLE (cancelled integer, in_flight integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_reason CONSTANT text := coalesce(reason, 'cancelled');
    v_woken  bigint[];
BEGIN
    WITH target AS (
        SELECT d.id
        FROM outbox.deliveries d
        WHERE d.notification_id = ANY (notification_ids)
          AND (d.status = 'pending' OR (d.status = 'processing' AND d.cancel_requested_at IS NULL))
        ORDER BY d.id
        FOR UPDATE
    ), changed AS (
        -- As the row is once its lock is ours (target re-checked it then): pending
        -- is cancelled, processing gets the request.
        UPDATE outbox.deliveries d
        SET status              = CASE WHEN d.status = 'pending' THEN 'cancelled' ELSE d.status END,
            last_error          = CASE WHEN d.status = 'pending' THEN v_reason ELSE d.last_error END,
            finished_at         = CASE WHEN d.status = 'pending' THEN now() ELSE d.finished_at END,
            cancel_requested_at = CASE WHEN d.status = 'processing' THEN now() END,
            cancel_reason       = CASE WHEN d.status = 'processing' THEN v_reason END,
            updated_at          = now()
        FROM target t
        WHERE d.id = t.id
        RETURNING d.id, d.notification_id, d.attempts, d.status
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
        SELECT c.notification_id, c.id,
               CASE c.status WHEN 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
               c.attempts, jsonb_build_object('reason', reason)
        FROM changed c
        RETURNING notification_id, kind
    )
    SELECT count(*) FILTER (WHERE l.kind = 'cancelled'), count(*) FILTER (WHERE l.kind = 'cancel_requested'),
           coalesce(array_agg(DISTINCT l.notification_id) FILTER (WHERE l.kind = 'cancel_requested'), '{}')
    INTO cancelled, in_flight, v_woken
    FROM logged l;
    PERFORM pg_notify('outbox_cancel', w::text) FROM unnest(v_woken) w;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION outbox.cancel_notifications(bigint[], text) IS
    'Cancel the unsent deliveries of the given notifications: (cancelled now, in_flight), summed (helper of cancel_detailed and cancel_broadcast).';


-- outbox.cancel_detailed: cancel every delivery of a notification that has not
-- been sent, and say what that did: (cancelled, in_flight).
--
-- cancelled  pending deliveries cancelled now: they are never sent.
-- in_flight  deliveries a worker holds right now (processing): their attempt
--            may be at the provider already and cannot be called back, so the
--            cancel is remembered (cancel_requested_at, cancel_reason, and a
--            cancel_requested event). When that attempt's result is recorded, a
--            success stays sent (the provider had it; its sent event says the
--            cancel came too late) and anything else -- a retry, a deferral, a
--            failure -- ends cancelled, never pending: no later attempt is made.
--            Lease recovery and a worker's shutdown end them cancelled too.
--            On commit, NOTIFY outbox_cancel (the notification id) tells the
--            workers, so one that has not started the provider call yet does
--            not start it.
-- Deliveries already finished, or whose cancel was already requested, are not
-- counted again. One UPDATE for both kinds, locking the rows in id order (the
-- order the worker records results in): a result recorded while this waits for
-- its row is seen, so a delivery that went back to pending meanwhile is
-- cancelled, not missed. The row locks last until the caller's transaction ends,
-- and a worker recording the result of one of these waits for that.
CREATE OR REPLACE FUNCTION outbox.cancel_detailed(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS TABLE (cancelled integer, in_flight integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_notification_id bigint;
BEGIN
    SELECT n.id INTO v_notification_id FROM outbox.notifications n WHERE n.message_id = cancel_detailed.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.cancel: no notification with message_id %', coalesce(quote_literal(message_id), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'message_id';
    END IF;
    RETURN QUERY SELECT c.cancelled, c.in_flight FROM outbox.cancel_notifications(ARRAY[v_notification_id], reason) c;
END
$$;
COMMENT ON FUNCTION outbox.cancel_detailed(text, text) IS
    'Cancel a notification''s unsent deliveries: (cancelled now, in_flight: an attempt may be at the provider, and it is never retried).';


-- outbox.cancel: outbox.cancel_detailed's two counts added up: how many
-- deliveries the cancel took hold of. Those cancelled now are never sent; an
-- attempt in flight may still reach the provider, but none is made after it.
-- 0 if every delivery was already sent or finished.
CREATE OR REPLACE FUNCTION outbox.cancel(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS integer
LANGUAGE sql
AS $$
    SELECT c.cancelled + c.in_flight FROM outbox.cancel_detailed(message_id, reason) c;
$$;
COMMENT ON FUNCTION outbox.cancel(text, text) IS
    'Cancel a notification''s unsent deliveries; how many: pending ones cancelled now plus those in flight, whose attempt may reach the provider but is never retried.';


-- outbox.redact: `value` with every occurrence of each of `secrets` replaced by
-- '[erased]', longest first (so an address that contains another goes whole).
-- A helper of outbox.erase_recipient.
CREATE OR REPLACE FUNCTION outbox.redact(value text, secrets text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    s text;
BEGIN
    IF value IS NULL THEN
        RETURN NULL;
    END IF;
    FOR s IN SELECT x FROM unnest(secrets) AS x WHERE length(x) >= 3 ORDER BY length(x) DESC, x LOOP
        value := replace(value, s, '[erased]');
    END LOOP;
    RETURN value;
END
$$;
COMMENT ON FUNCTION outbox.redact(text, text[]) IS
    'Replace each of the given strings (at least 3 characters) in a text with [erased]; used by erase_recipient.';


-- outbox.erase_recipient: the right to erasure (GDPR art. 17) for one recipient.
--
-- Afterwards nothing in the outbox schema names the person or reaches them:
--   * their unsent deliveries (pending, and processing: a worker that holds one
--     finds its lease gone and records nothing) are cancelled, with an event;
--   * every delivery of their notifications has its destination replaced by
--     'erased:<delivery id>' and the addresses and tokens scrubbed from its
--     last error; their notifications keep their message id (the idempotency
--     key: a producer retrying it gets the old notification, not a new send)
--     but lose their data ('{}');
--   * the events of those notifications whose detail mentions an address,
--     number or token are rewritten with it scrubbed, keeping their id, time
--     and kind (the one exception to the trail's append-only rule, made here
--     and recorded);
--   * their rate buckets, devices and preferences, and the recipient row, are
--     deleted;
--   * an 'erased' event is written on each of their notifications, and one
--     standalone 'erased' event with the counts and the internal id (never
--     the application's user id).
-- Kept: suppressions (an address that bounced or said STOP stays suppressed:
-- that list exists so as not to contact it again) and notifications sent to a
-- direct address, which belong to no recipient. Returns the counts as jsonb.
CREATE OR REPLACE FUNCTION outbox.erase_recipient(recipient text, actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
-- The scrub below rewrites events by delete and insert, one of the few deletes
-- events_no_delete (sql/retention.sql) lets through.
SET outbox.retention = 'on'
AS $$
#variable_conflict use_variable
DECLARE
    v_rid            bigint;
    v_secrets        text[];
    v_notifications  bigint[];
    v_devices        integer;
    v_preferences    integer;
    v_deliveries     integer;
    v_cancelled      integer;
    v_events         integer;
    v_result         jsonb;
BEGIN
    SELECT r.id INTO v_rid FROM outbox.recipients r WHERE r.external_id = recipient FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.erase_recipient: unknown recipient %', coalesce(quote_literal(recipient), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'recipient';
    END IF;

    SELECT coalesce(array_agg(n.id ORDER BY n.id), '{}') INTO v_notifications
    FROM outbox.notifications n WHERE n.recipient_id = v_rid;

    -- Every string that could name or reach the person: their addresses, their
    -- tokens, and every destination their deliveries went to (an address they
    -- have since changed included).
    SELECT coalesce(array_agg(DISTINCT s.v) FILTER (WHERE s.v IS NOT NULL AND s.v <> ''), '{}')
    INTO v_secrets
    FROM (
        SELECT r.email AS v FROM outbox.recipients r WHERE r.id = v_rid
        UNION ALL SELECT r.phone FROM outbox.recipients r WHERE r.id = v_rid
        UNION ALL SELECT d.token FROM outbox.devices d WHERE d.recipient_id = v_rid
        UNION ALL SELECT d.destination FROM outbox.deliveries d WHERE d.notification_id = ANY (v_notifications)
    ) s;

    -- Nothing more goes out to them.
    WITH unsent AS (
        SELECT d.id, d.notification_id, d.attempts, d.status = 'processing' AS in_flight
        FROM outbox.deliveries d
        WHERE d.notification_id = ANY (v_notifications) AND d.status IN ('pending', 'processing')
        FOR UPDATE
    ), stopped AS (
        UPDATE outbox.deliveries d
        SET status = 'cancelled', last_error = 'recipient erased', lease_owner = NULL,
            lease_expires_at = NULL, in_doubt = d.in_doubt + u.in_flight::integer,
            finished_at = now(), updated_at = now()
        FROM unsent u WHERE d.id = u.id
        RETURNING d.id
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
        SELECT u.notification_id, u.id, 'cancelled', u.attempts, actor,
               jsonb_build_object('reason', 'recipient erased', 'in_flight', u.in_flight)
        FROM unsent u JOIN stopped s ON s.id = u.id
        RETURNING 1
    )
    SELECT count(*) INTO v_cancelled FROM logged;

    UPDATE outbox.deliveries d
    SET destination = 'erased:' || d.id, last_error = outbox.redact(d.last_error, v_secrets),
        updated_at = now()
    WHERE d.notification_id = ANY (v_notifications);
    GET DIAGNOSTICS v_deliveries = ROW_COUNT;

    UPDATE outbox.notifications n SET data = '{}', address = NULL WHERE n.id = ANY (v_notifications);

    -- Events are never updated (events_append_only): the ones that mention the
    -- person are replaced by scrubbed copies with the same id, time and kind.
    WITH mentioning AS (
        DELETE FROM outbox.events e
        WHERE e.notification_id = ANY (v_notifications) AND e.detail IS NOT NULL
          AND EXISTS (SELECT 1 FROM unnest(v_secrets) s WHERE strpos(e.detail::text, s) > 0)
        RETURNING e.*
    ), scrubbed AS (
        INSERT INTO outbox.events (id, notification_id, delivery_id, kind, attempt, worker, detail, created_at)
        OVERRIDING SYSTEM VALUE
        SELECT m.id, m.notification_id, m.delivery_id, m.kind, m.attempt, m.worker,
               outbox.redact(m.detail::text, v_secrets)::jsonb, m.created_at
        FROM mentioning m
        RETURNING 1
    )
    SELECT count(*) INTO v_events FROM scrubbed;

    -- A missing bucket is a full one: deleting theirs changes no limit.
    DELETE FROM outbox.rate_buckets b
    WHERE b.scope = 'recipient'
      AND (b.subject = 'recipient:' || v_rid
           OR b.subject IN (SELECT 'device:' || md5(d.token) FROM outbox.devices d WHERE d.recipient_id = v_rid));

    SELECT count(*) INTO v_devices FROM outbox.devices d WHERE d.recipient_id = v_rid;
    SELECT count(*) INTO v_preferences FROM outbox.preferences p WHERE p.recipient_id = v_rid;
    -- Devices and preferences go with it (ON DELETE CASCADE); notifications stay, unlinked.
    DELETE FROM outbox.recipients r WHERE r.id = v_rid;

    v_result := jsonb_build_object(
        'recipient_id', v_rid, 'notifications', cardinality(v_notifications),
        'deliveries', v_deliveries, 'cancelled', v_cancelled, 'devices', v_devices,
        'preferences', v_preferences, 'events_scrubbed', v_events);
    INSERT INTO outbox.events (notification_id, kind, worker, detail)
    SELECT n, 'erased', actor, jsonb_build_object('reason', 'recipient erased')
    FROM unnest(v_notifications) AS n;
    INSERT INTO outbox.events (kind, worker, detail) VALUES ('erased', actor, v_result);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION outbox.erase_recipient(text, text) IS
    'Erase a recipient (GDPR): cancel their unsent deliveries, scrub their addresses and tokens from '
    'deliveries and events, empty their notifications'' data, delete them with their devices and preferences.';
