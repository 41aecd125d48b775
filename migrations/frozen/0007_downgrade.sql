-- Revision 0007, downgrade: outbox.enqueue, outbox.enqueue_many and
-- outbox.upsert_recipient as 0001 made them (0001_functions_enqueue.sql and
-- 0001_functions_registry.sql, the last revision that defined them).

-- outbox.enqueue: the producer's one call, inside the producer's own transaction.
--
--   SELECT outbox.enqueue(message_id => 'order-42-confirmed', recipient => 'user-7',
--                         template => 'order_confirmed', data => '{"order": 42}');
--
-- Creates the notification and one delivery per destination (each active device
-- for push, the recipient's email address, phone number) and returns the
-- notification's id. Enqueueing a message id again returns the first
-- notification's id and changes nothing.
--
-- Bad input raises SQLSTATE class OB (OB001 validation, OB002 unknown recipient,
-- OB003 unknown template, OB004 unknown channel) with the offending parameter in
-- the error's COLUMN field and a message naming it; nothing is written.
--
-- Deliveries that cannot be sent are still recorded, already terminal, so a DBA
-- can see why nothing went out: 'suppressed' (opted out, suppressed address, no
-- destination) and 'expired' (expires_at already past).

CREATE OR REPLACE FUNCTION outbox.enqueue(
    message_id  text,
    recipient   text DEFAULT NULL,
    template    text DEFAULT NULL,
    data        jsonb DEFAULT '{}',
    channels    text[] DEFAULT NULL,
    address     text DEFAULT NULL,
    category    text DEFAULT NULL,
    priority    integer DEFAULT 0,
    send_at     timestamptz DEFAULT NULL,
    expires_at  timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_id           bigint;
    v_recipient    outbox.recipients;
    v_channels     outbox.channel[];
    v_wanted       outbox.channel[];
    v_ch           text;
    v_critical     boolean;
    v_data_bytes   integer;
BEGIN
    -- Idempotency first: a repeat is answered before any validation or write.
    SELECT n.id INTO v_id FROM outbox.notifications n WHERE n.message_id = enqueue.message_id;
    IF FOUND THEN
        RETURN v_id;
    END IF;

    IF message_id IS NULL OR length(message_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'outbox.enqueue: message_id must be 1 to 255 characters, got %',
            coalesce(length(message_id)::text || ' characters', 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'message_id';
    END IF;
    IF template IS NULL OR template = '' THEN
        RAISE EXCEPTION 'outbox.enqueue: template is required'
            USING ERRCODE = 'OB001', COLUMN = 'template';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'outbox.enqueue: data must be a JSON object, got %',
            coalesce(jsonb_typeof(data), 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'data';
    END IF;
    v_data_bytes := octet_length(data::text);
    IF v_data_bytes > 65536 THEN
        RAISE EXCEPTION 'outbox.enqueue: data is % bytes, the limit is 65536', v_data_bytes
            USING ERRCODE = 'OB001', COLUMN = 'data';
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN -100 AND 100 THEN
        RAISE EXCEPTION 'outbox.enqueue: priority must be between -100 and 100, got %', priority
            USING ERRCODE = 'OB001', COLUMN = 'priority';
    END IF;
    IF expires_at IS NOT NULL AND send_at IS NOT NULL AND expires_at <= send_at THEN
        RAISE EXCEPTION 'outbox.enqueue: expires_at (%) is not after send_at (%)', expires_at, send_at
            USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    IF category IS NOT NULL AND category !~ '^[a-z0-9][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'outbox.enqueue: category % is not a valid name (lowercase letters, digits, _ . -)',
            quote_literal(category) USING ERRCODE = 'OB001', COLUMN = 'category';
    END IF;

    IF channels IS NOT NULL THEN
        IF cardinality(channels) = 0 THEN
            RAISE EXCEPTION 'outbox.enqueue: channels is empty'
                USING ERRCODE = 'OB001', COLUMN = 'channels';
        END IF;
        FOREACH v_ch IN ARRAY channels LOOP
            IF v_ch IS NULL OR v_ch NOT IN ('email', 'sms', 'push') THEN
                RAISE EXCEPTION 'outbox.enqueue: unknown channel % (expected email, sms or push)',
                    coalesce(quote_literal(v_ch), 'NULL')
                    USING ERRCODE = 'OB004', COLUMN = 'channels';
            END IF;
        END LOOP;
        v_wanted := ARRAY(SELECT DISTINCT c::outbox.channel FROM unnest(channels) c ORDER BY 1);
    END IF;

    IF (recipient IS NULL) = (address IS NULL) THEN
        RAISE EXCEPTION 'outbox.enqueue: give exactly one of recipient or address'
            USING ERRCODE = 'OB001', COLUMN = 'recipient';
    END IF;

    -- The channels a template can serve.
    SELECT array_agg(DISTINCT t.channel ORDER BY t.channel) INTO v_channels
    FROM outbox.templates t WHERE t.key = template AND t.active;
    IF v_channels IS NULL THEN
        RAISE EXCEPTION 'outbox.enqueue: unknown template % (no active version)', quote_literal(template)
            USING ERRCODE = 'OB003', COLUMN = 'template';
    END IF;

    IF address IS NOT NULL THEN
        -- A direct address: one channel, inferred from its form when not given.
        IF v_wanted IS NULL THEN
            v_wanted := CASE WHEN address LIKE '%@%' THEN ARRAY['email']::outbox.channel[]
                             WHEN address LIKE '+%' THEN ARRAY['sms']::outbox.channel[] END;
        END IF;
        IF v_wanted IS NULL OR cardinality(v_wanted) <> 1 OR v_wanted[1] = 'push' THEN
            RAISE EXCEPTION 'outbox.enqueue: a direct address takes exactly one channel, email or sms (got %)',
                coalesce(array_to_string(v_wanted, ', '), quote_literal(address))
                USING ERRCODE = 'OB001', COLUMN = 'channels';
        END IF;
        IF v_wanted[1] = 'email' AND (address !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' OR length(address) > 254) THEN
            RAISE EXCEPTION 'outbox.enqueue: address % is not a valid email address', quote_literal(address)
                USING ERRCODE = 'OB001', COLUMN = 'address';
        END IF;
        IF v_wanted[1] = 'sms' AND address !~ '^\+[1-9][0-9]{6,14}$' THEN
            RAISE EXCEPTION 'outbox.enqueue: address % is not an E.164 phone number (like +14155550123)',
                quote_literal(address) USING ERRCODE = 'OB001', COLUMN = 'address';
        END IF;
    ELSE
        SELECT * INTO v_recipient FROM outbox.recipients r WHERE r.external_id = recipient;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'outbox.enqueue: unknown recipient %', quote_literal(recipient)
                USING ERRCODE = 'OB002', COLUMN = 'recipient';
        END IF;
        IF v_wanted IS NULL THEN
            -- Default: every channel the template has and the recipient can receive.
            v_wanted := ARRAY(
                SELECT c FROM unnest(v_channels) c
                WHERE (c = 'email' AND v_recipient.email IS NOT NULL)
                   OR (c = 'sms' AND v_recipient.phone IS NOT NULL)
                   OR (c = 'push' AND EXISTS (SELECT 1 FROM outbox.devices d
                                               WHERE d.recipient_id = v_recipient.id AND d.active)));
            IF cardinality(v_wanted) = 0 THEN
                RAISE EXCEPTION 'outbox.enqueue: recipient % can receive none of the channels of template % (%)',
                    quote_literal(recipient), quote_literal(template), array_to_string(v_channels, ', ')
                    USING ERRCODE = 'OB001', COLUMN = 'channels';
            END IF;
        END IF;
    END IF;

    FOREACH v_ch IN ARRAY v_wanted::text[] LOOP
        IF NOT v_ch::outbox.channel = ANY (v_channels) THEN
            RAISE EXCEPTION 'outbox.enqueue: template % has no active version for channel %',
                quote_literal(template), v_ch USING ERRCODE = 'OB003', COLUMN = 'template';
        END IF;
    END LOOP;

    INSERT INTO outbox.notifications AS n
        (message_id, recipient_id, address, template_key, data, category, priority,
         channels, send_at, expires_at)
    VALUES (message_id, v_recipient.id, address, template, data, category, priority,
            v_wanted, send_at, expires_at)
    ON CONFLICT ON CONSTRAINT notifications_message_id_key DO NOTHING
    RETURNING n.id INTO v_id;
    IF v_id IS NULL THEN
        -- A concurrent transaction enqueued the same message id and committed first.
        SELECT n.id INTO v_id FROM outbox.notifications n WHERE n.message_id = enqueue.message_id;
        RETURN v_id;
    END IF;

    v_critical := coalesce((SELECT c.critical FROM outbox.categories c WHERE c.name = category), false);

    WITH destinations AS (
        SELECT 'email'::outbox.channel AS channel, coalesce(address, v_recipient.email, '') AS destination,
               NULL::bigint AS device_id
        WHERE 'email' = ANY (v_wanted)
        UNION ALL
        SELECT 'sms', coalesce(address, v_recipient.phone, ''), NULL
        WHERE 'sms' = ANY (v_wanted)
        UNION ALL
        SELECT 'push', d.token, d.id
        FROM outbox.devices d
        WHERE 'push' = ANY (v_wanted) AND d.recipient_id = v_recipient.id AND d.active
        UNION ALL
        -- Push asked for but no active device: recorded as suppressed, not silently dropped.
        SELECT 'push', '', NULL
        WHERE 'push' = ANY (v_wanted)
          AND NOT EXISTS (SELECT 1 FROM outbox.devices d WHERE d.recipient_id = v_recipient.id AND d.active)
    ),
    judged AS (
        SELECT dst.*,
               CASE
                   WHEN dst.destination = '' THEN 'no ' || CASE dst.channel WHEN 'push' THEN 'active device'
                                                                          WHEN 'sms' THEN 'phone number'
                                                                          ELSE 'email address' END
                   WHEN s.reason IS NOT NULL THEN 'suppressed address: ' || s.reason
                   WHEN NOT v_critical AND p.opted_in IS FALSE THEN 'opted out of ' || dst.channel
                        || CASE WHEN p.category = '*' THEN '' ELSE ' ' || p.category END
               END AS suppressed_reason
        FROM destinations dst
        LEFT JOIN outbox.suppressions s
               ON s.channel = dst.channel AND s.destination = dst.destination
        LEFT JOIN LATERAL (
            SELECT pr.opted_in, pr.category FROM outbox.preferences pr
            WHERE pr.recipient_id = v_recipient.id AND pr.channel = dst.channel
              AND pr.category IN ('*', coalesce(category, '*'))
            ORDER BY pr.opted_in, pr.category DESC  -- an opt-out wins over an opt-in
            LIMIT 1
        ) p ON true
    ),
    inserted AS (
        INSERT INTO outbox.deliveries AS dl
            (notification_id, channel, destination, device_id, status, priority, max_attempts,
             next_attempt_at, expires_at, last_error, finished_at)
        SELECT v_id, j.channel, j.destination, j.device_id,
               CASE WHEN j.suppressed_reason IS NOT NULL THEN 'suppressed'
                    WHEN expires_at <= now() THEN 'expired'
                    ELSE 'pending' END::outbox.delivery_status,
               priority, cc.max_attempts,
               greatest(coalesce(send_at, now()), now()), expires_at,
               coalesce(j.suppressed_reason, CASE WHEN expires_at <= now() THEN 'expired before it was enqueued' END),
               CASE WHEN j.suppressed_reason IS NOT NULL OR expires_at <= now() THEN now() END
        FROM judged j JOIN outbox.channel_config cc ON cc.channel = j.channel
        RETURNING dl.id, dl.status, dl.last_error
    )
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
    SELECT v_id, i.id, 'created', 0, NULL FROM inserted i
    UNION ALL
    SELECT v_id, i.id, i.status::text, 0, jsonb_build_object('reason', i.last_error)
    FROM inserted i WHERE i.status <> 'pending';

    RETURN v_id;
END
$$;

COMMENT ON FUNCTION outbox.enqueue(text, text, text, jsonb, text[], text, text, integer, timestamptz, timestamptz) IS
    'Enqueue a notification inside the caller''s transaction; returns its id. Same message_id again: returns the first id, changes nothing.';


-- outbox.enqueue_many: many notifications in one round trip.
-- items: a JSON array of objects with the same keys as enqueue's parameters.
-- Returns the notification ids in the order given.
CREATE OR REPLACE FUNCTION outbox.enqueue_many(items jsonb) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    v_item  jsonb;
    v_ids   bigint[] := '{}';
    v_pos   integer := 0;
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'outbox.enqueue_many: items must be a JSON array, got %', coalesce(jsonb_typeof(items), 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'items';
    END IF;
    FOR v_item IN SELECT value FROM jsonb_array_elements(items) LOOP
        v_pos := v_pos + 1;
        IF jsonb_typeof(v_item) <> 'object' THEN
            RAISE EXCEPTION 'outbox.enqueue_many: item % is not a JSON object', v_pos
                USING ERRCODE = 'OB001', COLUMN = 'items';
        END IF;
        v_ids := v_ids || outbox.enqueue(
            message_id => v_item ->> 'message_id',
            recipient  => v_item ->> 'recipient',
            template   => v_item ->> 'template',
            data       => coalesce(v_item -> 'data', '{}'),
            channels   => CASE WHEN v_item ? 'channels' AND jsonb_typeof(v_item -> 'channels') = 'array'
                               THEN ARRAY(SELECT jsonb_array_elements_text(v_item -> 'channels'))
                               WHEN v_item ? 'channels' AND jsonb_typeof(v_item -> 'channels') <> 'null'
                               THEN ARRAY[v_item ->> 'channels'] END,
            address    => v_item ->> 'address',
            category   => v_item ->> 'category',
            priority   => coalesce((v_item ->> 'priority')::integer, 0),
            send_at    => (v_item ->> 'send_at')::timestamptz,
            expires_at => (v_item ->> 'expires_at')::timestamptz);
    END LOOP;
    RETURN v_ids;
END
$$;

COMMENT ON FUNCTION outbox.enqueue_many(jsonb) IS
    'Enqueue a JSON array of notifications (enqueue''s parameters as keys) in one call; returns their ids in order.';


-- outbox.upsert_recipient: create or update a recipient by the app's user id.
-- A NULL argument leaves that field as it is (on update); pass '' to clear
-- email or phone.
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
        -- Accept fr_CA and FR-ca alike; store the canonical fr-CA.
        locale := CASE WHEN locale = 'default' THEN locale ELSE lower(replace(locale, '_', '-')) END;
        IF locale !~ '^(default|[a-z]{2,3}(-[a-z0-9]{2,8})*)$' THEN
            RAISE EXCEPTION 'outbox.upsert_recipient: locale % is not a language tag (like fr-CA)',
                quote_literal(locale) USING ERRCODE = 'OB001', COLUMN = 'locale';
        END IF;
        locale := CASE WHEN locale ~ '-[a-z]{2}$'
                       THEN substr(locale, 1, length(locale) - 2) || upper(right(locale, 2))
                       ELSE locale END;
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
