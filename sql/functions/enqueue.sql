-- outbox.enqueue: the producer's one call, inside the producer's own transaction.
--
--   SELECT outbox.enqueue(message_id => 'order-42-confirmed', recipient => 'user-7',
--                         template => 'order_confirmed', data => '{"order": 42}');
--
-- Creates the notification and one delivery per destination (each active device
-- for push, the recipient's email address, phone number) and returns the
-- notification's id.
--
-- Bad input raises SQLSTATE class OB (OB001 validation, OB002 unknown recipient,
-- OB003 unknown template, OB004 unknown channel) with the offending parameter in
-- the error's COLUMN field and a message naming it; nothing is written.
--
-- The checks run in three groups, and a repeat of a message id is answered
-- between the first and the second:
--   1. the form of the call's own arguments (lengths, blank ids, data, priority,
--      channel names, finite send_at/expires_at, address syntax, ...). These do
--      not depend on anything stored, so a malformed call fails even when its
--      message id exists: a producer bug shows on its first retry too.
--   2. the horizon, on the database's clock: send_at within a year of now (either
--      side; NULL sends now), expires_at no more than a year ago and no more than
--      a year after the send. Later than that is a bug (a unit mix-up, a
--      'infinity'), and a delivery due then would never end.
--   3. what is stored: the template, the recipient and what it can receive.
-- Idempotency: enqueueing a message id again returns the first notification's id
-- and changes nothing, without looking at the rest of its content (data,
-- template, channels...), and without the checks of groups 2 and 3: what they
-- look at may have changed since the first call (a template deactivated, a day
-- gone by), and a retry of a call that succeeded must keep succeeding.
--
-- Concurrency: two transactions enqueueing one message id at once both pass the
-- first look; the second one's INSERT waits for the first transaction. If the
-- first commits, the second returns the first's id (READ COMMITTED), and its own
-- content is dropped without a sign, as for any repeat; if it rolls back, the
-- second's row is inserted. Under REPEATABLE READ or SERIALIZABLE the waiting
-- transaction gets SQLSTATE 40001 (serialization_failure) instead: retry the
-- whole transaction, as for any serialization failure, and the retry returns the
-- winner's id.
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
    -- Only white space (what Python's str.isspace() calls white space), spelled out
    -- so that it does not depend on the database's locale.
    c_blank        CONSTANT text := '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$';
    c_horizon      CONSTANT interval := interval '1 year';
    v_id           bigint;
    v_recipient    outbox.recipients;
    v_channels     outbox.channel[];
    v_wanted       outbox.channel[];
    v_ch           text;
    v_critical     boolean;
    v_data_bytes   integer;
BEGIN
    -- 1. The form of the arguments.
    IF message_id IS NULL OR length(message_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'outbox.enqueue: message_id must be 1 to 255 characters, got %',
            coalesce(length(message_id)::text || ' characters', 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'message_id';
    END IF;
    IF message_id ~ c_blank THEN
        RAISE EXCEPTION 'outbox.enqueue: message_id is blank (white space only)'
            USING ERRCODE = 'OB001', COLUMN = 'message_id';
    END IF;
    IF template IS NULL OR template = '' THEN
        RAISE EXCEPTION 'outbox.enqueue: template is required'
            USING ERRCODE = 'OB001', COLUMN = 'template';
    END IF;
    IF template ~ c_blank THEN
        RAISE EXCEPTION 'outbox.enqueue: template is blank (white space only)'
            USING ERRCODE = 'OB001', COLUMN = 'template';
    END IF;
    IF recipient ~ c_blank THEN
        RAISE EXCEPTION 'outbox.enqueue: recipient is blank (white space only)'
            USING ERRCODE = 'OB001', COLUMN = 'recipient';
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
    IF NOT isfinite(send_at) THEN
        RAISE EXCEPTION 'outbox.enqueue: send_at must be a finite time, got % (NULL sends now)', send_at
            USING ERRCODE = 'OB001', COLUMN = 'send_at';
    END IF;
    IF NOT isfinite(expires_at) THEN
        RAISE EXCEPTION 'outbox.enqueue: expires_at must be a finite time, got % (NULL never expires)', expires_at
            USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    IF expires_at IS NOT NULL AND send_at IS NOT NULL AND expires_at <= send_at THEN
        RAISE EXCEPTION 'outbox.enqueue: expires_at (%) is not after send_at (%)', expires_at, send_at
            USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    -- At most 64 characters, spelled as a length: the regex's {0,63} costs ten times more.
    IF category IS NOT NULL AND (length(category) > 64 OR category !~ '^[a-z0-9][a-z0-9_.-]*$') THEN
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

    IF address IS NOT NULL THEN
        IF address ~ c_blank THEN
            RAISE EXCEPTION 'outbox.enqueue: address is blank (white space only)'
                USING ERRCODE = 'OB001', COLUMN = 'address';
        END IF;
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
    END IF;

    -- Idempotency: a well-formed repeat is answered here, before the checks that
    -- depend on the clock or on stored rows.
    SELECT n.id INTO v_id FROM outbox.notifications n WHERE n.message_id = enqueue.message_id;
    IF FOUND THEN
        RETURN v_id;
    END IF;

    -- 2. The horizon (now() is the transaction's start, as for the rows written below).
    IF send_at > now() + c_horizon THEN
        RAISE EXCEPTION 'outbox.enqueue: send_at % is more than a year ahead (the limit is %)',
            send_at, now() + c_horizon USING ERRCODE = 'OB001', COLUMN = 'send_at';
    END IF;
    IF send_at < now() - c_horizon THEN
        RAISE EXCEPTION 'outbox.enqueue: send_at % is more than a year ago (the limit is %; NULL sends now)',
            send_at, now() - c_horizon USING ERRCODE = 'OB001', COLUMN = 'send_at';
    END IF;
    IF expires_at > coalesce(send_at, now()) + c_horizon THEN
        RAISE EXCEPTION 'outbox.enqueue: expires_at % is more than a year after the send (%; NULL never expires)',
            expires_at, coalesce(send_at, now()) USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    IF expires_at < now() - c_horizon THEN
        RAISE EXCEPTION 'outbox.enqueue: expires_at % is more than a year ago (the limit is %)',
            expires_at, now() - c_horizon USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;

    -- 3. What is stored. The channels a template can serve:
    SELECT array_agg(DISTINCT t.channel ORDER BY t.channel) INTO v_channels
    FROM outbox.templates t WHERE t.key = template AND t.active;
    IF v_channels IS NULL THEN
        RAISE EXCEPTION 'outbox.enqueue: unknown template % (no active version)', quote_literal(template)
            USING ERRCODE = 'OB003', COLUMN = 'template';
    END IF;

    IF address IS NULL THEN
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
    'Enqueue a notification inside the caller''s transaction; returns its id. A well-formed repeat of a message_id returns the first id and changes nothing.';


-- outbox.enqueue_many: many notifications in one round trip.
-- items: a JSON array of objects with enqueue's parameters as keys (message_id,
-- recipient, template, data, channels, address, category, priority, send_at,
-- expires_at), each checked as enqueue checks it. A key may be absent or null for
-- its default. Text values are JSON strings; channels a string or an array of
-- them; priority an integer (a JSON number or a string of digits); send_at and
-- expires_at strings PostgreSQL reads as timestamptz (ISO 8601; without an
-- offset, read in the session's TimeZone).
-- Returns the notification ids in the order given. One bad item fails the whole
-- call: the error names the field (COLUMN) and the item, counted from 0 as
-- jsonb counts (items -> 0), in its message: 'outbox.enqueue_many: items[3]: ...'.
-- An unknown key is refused (a misspelt "prio" is a bug, not a default), its
-- name in COLUMN.
CREATE OR REPLACE FUNCTION outbox.enqueue_many(items jsonb) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    c_fields    CONSTANT text[] := ARRAY['address', 'category', 'channels', 'data', 'expires_at',
                                         'message_id', 'priority', 'recipient', 'send_at', 'template'];
    v_item      jsonb;
    v_value     jsonb;
    v_ids       bigint[] := '{}';
    v_pos       integer := -1;
    v_at        text;
    v_key       text;
    v_field     text;  -- set while a value is cast, to name it if the cast fails
    v_unknown   text[];
    v_bad       bigint;
    v_priority  integer;
    v_channels  text[];
    v_send_at   timestamptz;
    v_expires   timestamptz;
    v_state     text;
    v_column    text;
    v_message   text;
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'outbox.enqueue_many: items must be a JSON array, got %', coalesce(jsonb_typeof(items), 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'items';
    END IF;
    -- One block around the whole loop, so that an error enqueue raises for an item
    -- can be given the item's position: one subtransaction per call, not per item.
    BEGIN
        FOR v_item IN SELECT value FROM jsonb_array_elements(items) LOOP
            v_pos := v_pos + 1;
            v_at := format('outbox.enqueue_many: items[%s]', v_pos);
            IF jsonb_typeof(v_item) <> 'object' THEN
                RAISE EXCEPTION '% is not a JSON object (got %)', v_at, jsonb_typeof(v_item)
                    USING ERRCODE = 'OB001', COLUMN = 'items';
            END IF;
            v_unknown := ARRAY(SELECT k FROM jsonb_object_keys(v_item) k WHERE k <> ALL (c_fields) ORDER BY k);
            IF cardinality(v_unknown) > 0 THEN
                -- Quoted as JSON strings: a key may be anything, '' and ';' included.
                RAISE EXCEPTION '% has unknown field(s) %; expected some of %',
                    v_at, (SELECT string_agg(to_json(k)::text, ', ') FROM unnest(v_unknown) k),
                    array_to_string(c_fields, ', ')
                    USING ERRCODE = 'OB001', COLUMN = v_unknown[1];
            END IF;
            FOREACH v_key IN ARRAY ARRAY['message_id', 'recipient', 'template', 'address', 'category'] LOOP
                IF jsonb_typeof(v_item -> v_key) NOT IN ('string', 'null') THEN
                    RAISE EXCEPTION '%: % must be a string, got %', v_at, v_key, jsonb_typeof(v_item -> v_key)
                        USING ERRCODE = 'OB001', COLUMN = v_key;
                END IF;
            END LOOP;
            FOREACH v_key IN ARRAY ARRAY['send_at', 'expires_at'] LOOP
                IF jsonb_typeof(v_item -> v_key) NOT IN ('string', 'null') THEN
                    RAISE EXCEPTION '%: % must be a string (a timestamp like 2026-12-24T09:00:00Z), got %',
                        v_at, v_key, jsonb_typeof(v_item -> v_key) USING ERRCODE = 'OB001', COLUMN = v_key;
                END IF;
            END LOOP;

            v_value := v_item -> 'priority';
            v_field := 'priority';
            IF v_value IS NULL OR jsonb_typeof(v_value) = 'null' THEN
                v_priority := 0;
            ELSIF NOT ((jsonb_typeof(v_value) = 'number' AND (v_value #>> '{}')::numeric % 1 = 0)
                       OR (jsonb_typeof(v_value) = 'string' AND v_value #>> '{}' ~ '^ *[+-]?[0-9]+ *$')) THEN
                RAISE EXCEPTION '%: priority must be an integer, got %', v_at, left(v_value::text, 60)
                    USING ERRCODE = 'OB001', COLUMN = 'priority';
            ELSIF (v_value #>> '{}')::numeric NOT BETWEEN -100 AND 100 THEN
                RAISE EXCEPTION '%: priority must be between -100 and 100, got %', v_at, left(v_value #>> '{}', 60)
                    USING ERRCODE = 'OB001', COLUMN = 'priority';
            ELSE
                v_priority := (v_value #>> '{}')::numeric;
            END IF;

            v_value := v_item -> 'channels';
            IF v_value IS NULL OR jsonb_typeof(v_value) = 'null' THEN
                v_channels := NULL;
            ELSIF jsonb_typeof(v_value) = 'string' THEN
                v_channels := ARRAY[v_value #>> '{}'];
            ELSIF jsonb_typeof(v_value) = 'array' THEN
                SELECT e.n - 1 INTO v_bad FROM jsonb_array_elements(v_value) WITH ORDINALITY AS e(v, n)
                WHERE jsonb_typeof(e.v) <> 'string' ORDER BY e.n LIMIT 1;
                IF FOUND THEN
                    RAISE EXCEPTION '%: channels[%] must be a string, got %',
                        v_at, v_bad, jsonb_typeof(v_value -> v_bad::integer)
                        USING ERRCODE = 'OB001', COLUMN = 'channels';
                END IF;
                v_channels := ARRAY(SELECT jsonb_array_elements_text(v_value));
            ELSE
                RAISE EXCEPTION '%: channels must be a channel name or an array of them, got %',
                    v_at, jsonb_typeof(v_value) USING ERRCODE = 'OB001', COLUMN = 'channels';
            END IF;

            v_field := 'send_at';
            v_send_at := (v_item ->> 'send_at')::timestamptz;
            v_field := 'expires_at';
            v_expires := (v_item ->> 'expires_at')::timestamptz;
            v_field := NULL;

            v_ids := v_ids || outbox.enqueue(
                message_id => v_item ->> 'message_id',
                recipient  => v_item ->> 'recipient',
                template   => v_item ->> 'template',
                data       => coalesce(nullif(v_item -> 'data', 'null'), '{}'),
                channels   => v_channels,
                address    => v_item ->> 'address',
                category   => v_item ->> 'category',
                priority   => v_priority,
                send_at    => v_send_at,
                expires_at => v_expires);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_column = COLUMN_NAME,
                                v_message = MESSAGE_TEXT;
        IF v_field IS NOT NULL AND left(v_state, 2) = '22' THEN
            -- A value PostgreSQL could not read as its type.
            RAISE EXCEPTION '%: % % is not %', v_at, v_field, left((v_item -> v_field)::text, 60),
                CASE v_field WHEN 'priority' THEN 'an integer from -100 to 100'
                             ELSE 'a timestamp (like 2026-12-24T09:00:00Z)' END
                USING ERRCODE = 'OB001', COLUMN = v_field, DETAIL = v_message;
        ELSIF left(v_state, 2) = 'OB' AND v_message LIKE 'outbox.enqueue: %' THEN
            -- enqueue's own error about this item: the same code and field, and the item.
            RAISE EXCEPTION '%: %', v_at, substr(v_message, length('outbox.enqueue: ') + 1)
                USING ERRCODE = v_state, COLUMN = coalesce(nullif(v_column, ''), 'items');
        ELSE
            RAISE;
        END IF;
    END;
    RETURN v_ids;
END
$$;

COMMENT ON FUNCTION outbox.enqueue_many(jsonb) IS
    'Enqueue a JSON array of notifications (enqueue''s parameters as keys; unknown keys refused) in one call; returns their ids in order.';
