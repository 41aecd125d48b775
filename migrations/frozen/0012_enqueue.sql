-- Revision 0012: one set-based core, outbox.enqueue_items (and its row type
-- outbox.enqueue_item, and outbox.enqueue_deliveries, the expansion of new
-- notifications into deliveries), under outbox.enqueue and outbox.enqueue_many,
-- which no longer loop per item; outbox.timestamptz_problem for enqueue_many's
-- timestamps (sql/functions/enqueue.sql at 0012).

-- outbox.enqueue: the producer's one call, inside the producer's own transaction.
--
--   SELECT outbox.enqueue(message_id => 'order-42-confirmed', recipient => 'user-7',
--                         template => 'order_confirmed', data => '{"order": 42}');
--
-- Creates the notification and one delivery per destination (each active device
-- for push, the recipient's email address, phone number) and returns the
-- notification's id.
--
-- Every way in — outbox.enqueue (one), outbox.enqueue_many (a JSON array), the
-- Python streaming path (COPY into a staging table) and broadcasts — goes through
-- one function, outbox.enqueue_items, which checks and writes a whole set of
-- notifications with set operations (one INSERT ... SELECT per table). What is
-- said below of "a call" holds for each item of a set, in the order given.
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
-- gone by), and a retry of a call that succeeded must keep succeeding. Within one
-- set, an item repeating an earlier item's message id is such a repeat: it gets
-- the earlier item's id. A set fails on its first bad item (the lowest position):
-- the answer is the one a loop calling enqueue item by item would give.
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

-- One notification as outbox.enqueue_items takes it: enqueue's parameters, typed,
-- with no defaults (NULL data or priority is refused, as enqueue refuses them).
CREATE TYPE outbox.enqueue_item AS (
    message_id  text,
    recipient   text,
    template    text,
    data        jsonb,
    channels    text[],
    address     text,
    category    text,
    priority    integer,
    send_at     timestamptz,
    expires_at  timestamptz
);
COMMENT ON TYPE outbox.enqueue_item IS
    'One notification for outbox.enqueue_items: enqueue''s parameters (data and priority required: ''{}'' and 0 are enqueue''s defaults).';


-- outbox.enqueue_deliveries: the deliveries of notifications just inserted, and
-- their events, as enqueue makes them, read from the notification rows (channels,
-- recipient or address, category, priority, send_at, expires_at): one per
-- destination (the address; the recipient's email address or phone number; each
-- active device for push, or one '' row when none), recorded already terminal
-- when it cannot be sent ('suppressed': no destination, a suppressed address, an
-- opt-out unless the category is critical; 'expired': expires_at past), with a
-- 'created' event each and one for the terminal status. Returns how many
-- deliveries it wrote. For each notification once, in the transaction that
-- inserted it (outbox.enqueue_items; a broadcast's own INSERT). It runs with its
-- caller's rights (not a producer function): the producer role, which has no
-- table rights, can only reach it through the definer functions.
CREATE OR REPLACE FUNCTION outbox.enqueue_deliveries(notification_ids bigint[]) RETURNS integer
LANGUAGE plpgsql
-- One plan for every call: with the default, each call of a few items would plan
-- the whole statement anew (a custom plan looks cheaper than the generic one), and
-- planning it costs more than running it. The lookups are written so that the
-- generic plan probes an index per item (OFFSET 0 below).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_count integer;
BEGIN
    IF coalesce(cardinality(notification_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    WITH destination AS (
        SELECT n.id AS notification_id, n.recipient_id, n.category, coalesce(cat.critical, false) AS critical,
               n.priority, n.send_at, n.expires_at, dst.channel, dst.destination, dst.device_id
        -- One index probe per id (OFFSET 0 keeps the planner from hashing the table).
        FROM unnest(notification_ids) AS k(id)
        CROSS JOIN LATERAL (SELECT n.* FROM outbox.notifications n WHERE n.id = k.id OFFSET 0) n
        LEFT JOIN LATERAL (SELECT r.email, r.phone FROM outbox.recipients r
                           WHERE r.id = n.recipient_id OFFSET 0) r ON true
        LEFT JOIN outbox.categories cat ON cat.name = n.category
        CROSS JOIN LATERAL (
            SELECT 'email'::outbox.channel AS channel,
                   coalesce(n.address, r.email, '') AS destination, NULL::bigint AS device_id
            WHERE 'email' = ANY (n.channels)
            UNION ALL
            SELECT 'sms', coalesce(n.address, r.phone, ''), NULL
            WHERE 'sms' = ANY (n.channels)
            UNION ALL
            SELECT 'push', d.token, d.id
            FROM outbox.devices d
            WHERE 'push' = ANY (n.channels) AND d.recipient_id = n.recipient_id AND d.active
            UNION ALL
            -- Push asked for but no active device: recorded as suppressed, not silently dropped.
            SELECT 'push', '', NULL
            WHERE 'push' = ANY (n.channels)
              AND NOT EXISTS (SELECT 1 FROM outbox.devices d WHERE d.recipient_id = n.recipient_id AND d.active)
        ) dst
    ),
    screened AS (
        SELECT dst.*,
               CASE
                   WHEN dst.destination = '' THEN 'no ' || CASE dst.channel WHEN 'push' THEN 'active device'
                                                                          WHEN 'sms' THEN 'phone number'
                                                                          ELSE 'email address' END
                   WHEN s.reason IS NOT NULL THEN 'suppressed address: ' || s.reason
                   WHEN NOT dst.critical AND p.opted_in IS FALSE THEN 'opted out of ' || dst.channel
                        || CASE WHEN p.category = '*' THEN '' ELSE ' ' || p.category END
               END AS suppressed_reason
        FROM destination dst
        LEFT JOIN outbox.suppressions s
               ON s.channel = dst.channel AND s.destination = dst.destination
        LEFT JOIN LATERAL (
            SELECT pr.opted_in, pr.category FROM outbox.preferences pr
            WHERE pr.recipient_id = dst.recipient_id AND pr.channel = dst.channel
              AND pr.category IN ('*', coalesce(dst.category, '*'))
            ORDER BY pr.opted_in, pr.category DESC  -- an opt-out wins over an opt-in
            LIMIT 1
        ) p ON true
    ),
    delivered AS (
        INSERT INTO outbox.deliveries AS dl
            (notification_id, channel, destination, device_id, status, priority, max_attempts,
             next_attempt_at, expires_at, last_error, finished_at)
        SELECT so.notification_id, so.channel, so.destination, so.device_id,
               CASE WHEN so.suppressed_reason IS NOT NULL THEN 'suppressed'
                    WHEN so.expires_at <= now() THEN 'expired'
                    ELSE 'pending' END::outbox.delivery_status,
               so.priority, cc.max_attempts,
               greatest(coalesce(so.send_at, now()), now()), so.expires_at,
               coalesce(so.suppressed_reason, CASE WHEN so.expires_at <= now() THEN 'expired before it was enqueued' END),
               CASE WHEN so.suppressed_reason IS NOT NULL OR so.expires_at <= now() THEN now() END
        FROM screened so JOIN outbox.channel_config cc ON cc.channel = so.channel
        RETURNING dl.id, dl.notification_id, dl.status, dl.last_error
    ),
    logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
        SELECT d.notification_id, d.id, 'created', 0, NULL FROM delivered d
        UNION ALL
        SELECT d.notification_id, d.id, d.status::text, 0, jsonb_build_object('reason', d.last_error)
        FROM delivered d WHERE d.status <> 'pending'
    )
    SELECT count(*) INTO v_count FROM delivered;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION outbox.enqueue_deliveries(bigint[]) IS
    'Write the deliveries and events of notifications just inserted, as enqueue does; returns how many deliveries.';


-- outbox.enqueue_items: the set-based core. Checks every item as enqueue checks
-- it and writes the new notifications in one statement, then their deliveries and
-- events with outbox.enqueue_deliveries in a second; returns the notification ids in the order of items (a repeat gets
-- the first id). An empty or NULL array returns '{}'.
--
-- caller and first_index only shape the error message of the first bad item:
-- '<caller>: items[<first_index + position from 0>]: <problem>', or, with
-- first_index NULL (one item, outbox.enqueue), '<caller>: <problem>'. A caller
-- that feeds a long stream in chunks passes the position of each chunk's first
-- item, so the error names the item's index in the whole stream.
CREATE OR REPLACE FUNCTION outbox.enqueue_items(
    items        outbox.enqueue_item[],
    caller       text DEFAULT 'outbox.enqueue_items',
    first_index  bigint DEFAULT 0
) RETURNS bigint[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan  -- as for enqueue_deliveries
AS $$
DECLARE
    -- Only white space (what Python's str.isspace() calls white space), spelled out
    -- so that it does not depend on the database's locale.
    c_blank      CONSTANT text := '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$';
    c_horizon    CONSTANT interval := interval '1 year';
    c_channels   CONSTANT text[] := ARRAY['email', 'sms', 'push'];
    v_bad_pos    bigint;
    v_bad        text[];  -- SQLSTATE, COLUMN, problem
    v_ids        bigint[];
    v_new        bigint[];  -- the notifications inserted
BEGIN
    IF coalesce(cardinality(items), 0) = 0 THEN
        RETURN '{}';
    END IF;

    WITH item AS (
        SELECT i.*,
               -- The channels asked for: the given ones, distinct and in enum order
               -- (once they are all valid), or for a direct address the one its
               -- form implies.
               CASE WHEN cardinality(i.channels) > 0 AND i.channels <@ c_channels
                    THEN ARRAY(SELECT DISTINCT c::outbox.channel FROM unnest(i.channels) c ORDER BY 1)
                    WHEN i.channels IS NULL AND i.address IS NOT NULL
                    THEN CASE WHEN i.address LIKE '%@%' THEN '{email}'::outbox.channel[]
                              WHEN i.address LIKE '+%' THEN '{sms}'::outbox.channel[] END
               END AS asked
        FROM unnest(items) WITH ORDINALITY
             AS i(message_id, recipient, template, data, channels, address, category, priority,
                  send_at, expires_at, pos)
    ),
    -- 1. The form of each item: its first problem, in the order enqueue has always
    -- checked them.
    formed AS (
        SELECT it.*, CASE
            WHEN it.message_id IS NULL OR length(it.message_id) NOT BETWEEN 1 AND 255 THEN
                ARRAY['OB001', 'message_id', format('message_id must be 1 to 255 characters, got %s',
                      coalesce(length(it.message_id)::text || ' characters', 'NULL'))]
            WHEN it.message_id ~ c_blank THEN
                ARRAY['OB001', 'message_id', 'message_id is blank (white space only)']
            WHEN it.template IS NULL OR it.template = '' THEN
                ARRAY['OB001', 'template', 'template is required']
            WHEN it.template ~ c_blank THEN
                ARRAY['OB001', 'template', 'template is blank (white space only)']
            WHEN it.recipient ~ c_blank THEN
                ARRAY['OB001', 'recipient', 'recipient is blank (white space only)']
            WHEN it.data IS NULL OR jsonb_typeof(it.data) <> 'object' THEN
                ARRAY['OB001', 'data', format('data must be a JSON object, got %s',
                      coalesce(jsonb_typeof(it.data), 'NULL'))]
            WHEN octet_length(it.data::text) > 65536 THEN
                ARRAY['OB001', 'data', format('data is %s bytes, the limit is 65536', octet_length(it.data::text))]
            WHEN it.priority IS NULL OR it.priority NOT BETWEEN -100 AND 100 THEN
                ARRAY['OB001', 'priority', format('priority must be between -100 and 100, got %s',
                      coalesce(it.priority::text, '<NULL>'))]
            WHEN NOT isfinite(it.send_at) THEN
                ARRAY['OB001', 'send_at', format('send_at must be a finite time, got %s (NULL sends now)', it.send_at)]
            WHEN NOT isfinite(it.expires_at) THEN
                ARRAY['OB001', 'expires_at', format('expires_at must be a finite time, got %s (NULL never expires)',
                      it.expires_at)]
            WHEN it.expires_at <= it.send_at THEN
                ARRAY['OB001', 'expires_at', format('expires_at (%s) is not after send_at (%s)',
                      it.expires_at, it.send_at)]
            -- At most 64 characters, spelled as a length: the regex's {0,63} costs ten times more.
            WHEN length(it.category) > 64 OR it.category !~ '^[a-z0-9][a-z0-9_.-]*$' THEN
                ARRAY['OB001', 'category', format('category %s is not a valid name (lowercase letters, digits, _ . -)',
                      quote_literal(it.category))]
            WHEN cardinality(it.channels) = 0 THEN
                ARRAY['OB001', 'channels', 'channels is empty']
            WHEN NOT it.channels <@ c_channels THEN
                ARRAY['OB004', 'channels', format('unknown channel %s (expected email, sms or push)',
                      (SELECT coalesce(quote_literal(u.c), 'NULL')
                       FROM unnest(it.channels) WITH ORDINALITY AS u(c, o)
                       WHERE u.c IS NULL OR u.c <> ALL (c_channels) ORDER BY u.o LIMIT 1))]
            WHEN (it.recipient IS NULL) = (it.address IS NULL) THEN
                ARRAY['OB001', 'recipient', 'give exactly one of recipient or address']
            WHEN it.address ~ c_blank THEN
                ARRAY['OB001', 'address', 'address is blank (white space only)']
            -- A direct address: one channel, inferred from its form when not given.
            WHEN it.address IS NOT NULL AND (it.asked IS NULL OR cardinality(it.asked) <> 1 OR it.asked[1] = 'push') THEN
                ARRAY['OB001', 'channels', format('a direct address takes exactly one channel, email or sms (got %s)',
                      coalesce(array_to_string(it.asked, ', '), quote_literal(it.address)))]
            WHEN it.asked[1] = 'email' AND it.address IS NOT NULL
                 AND (it.address !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' OR length(it.address) > 254) THEN
                ARRAY['OB001', 'address', format('address %s is not a valid email address', quote_literal(it.address))]
            WHEN it.asked[1] = 'sms' AND it.address !~ '^\+[1-9][0-9]{6,14}$' THEN
                ARRAY['OB001', 'address', format('address %s is not an E.164 phone number (like +14155550123)',
                      quote_literal(it.address))]
        END AS form_error
        FROM item it
    ),
    -- The channels each template can serve (active versions).
    offer AS (
        SELECT t.key, array_agg(DISTINCT t.channel ORDER BY t.channel) AS channels
        FROM outbox.templates t
        WHERE t.active AND t.key IN (SELECT it.template FROM item it)
        GROUP BY t.key
    ),
    resolved AS (
        SELECT f.*,
               -- Idempotency: stored already, or an earlier item of this set.
               n.id AS stored_id,
               n.id IS NOT NULL OR f.pos > min(f.pos) OVER (PARTITION BY f.message_id) AS repeat,
               o.channels AS offered,
               r.id AS recipient_id, r.email AS recipient_email, r.phone AS recipient_phone,
               r.id IS NOT NULL AND EXISTS (SELECT 1 FROM outbox.devices d
                                            WHERE d.recipient_id = r.id AND d.active) AS has_device
        FROM formed f
        -- The lookups by key are kept apart (OFFSET 0) so that each is one index
        -- probe per item: joined, the planner may hash a whole table for them.
        LEFT JOIN LATERAL (SELECT n.id FROM outbox.notifications n
                           WHERE n.message_id = f.message_id OFFSET 0) n ON true
        LEFT JOIN offer o ON o.key = f.template
        LEFT JOIN LATERAL (SELECT r.id, r.email, r.phone FROM outbox.recipients r
                           WHERE f.address IS NULL AND r.external_id = f.recipient OFFSET 0) r ON true
    ),
    wanting AS (
        SELECT rs.*,
               CASE WHEN rs.asked IS NOT NULL OR rs.address IS NOT NULL THEN rs.asked
                    -- Default: every channel the template has and the recipient can receive.
                    WHEN rs.recipient_id IS NOT NULL THEN ARRAY(
                        SELECT c FROM unnest(rs.offered) c
                        WHERE (c = 'email' AND rs.recipient_email IS NOT NULL)
                           OR (c = 'sms' AND rs.recipient_phone IS NOT NULL)
                           OR (c = 'push' AND rs.has_device))
               END AS wanted
        FROM resolved rs
    ),
    judged AS (
        SELECT w.*, coalesce(w.form_error, CASE WHEN NOT w.repeat THEN CASE
            -- 2. The horizon (now() is the transaction's start, as for the rows written below).
            WHEN w.send_at > now() + c_horizon THEN
                ARRAY['OB001', 'send_at', format('send_at %s is more than a year ahead (the limit is %s)',
                      w.send_at, now() + c_horizon)]
            WHEN w.send_at < now() - c_horizon THEN
                ARRAY['OB001', 'send_at', format('send_at %s is more than a year ago (the limit is %s; NULL sends now)',
                      w.send_at, now() - c_horizon)]
            WHEN w.expires_at > coalesce(w.send_at, now()) + c_horizon THEN
                ARRAY['OB001', 'expires_at', format('expires_at %s is more than a year after the send (%s; NULL never expires)',
                      w.expires_at, coalesce(w.send_at, now()))]
            WHEN w.expires_at < now() - c_horizon THEN
                ARRAY['OB001', 'expires_at', format('expires_at %s is more than a year ago (the limit is %s)',
                      w.expires_at, now() - c_horizon)]
            -- 3. What is stored.
            WHEN w.offered IS NULL THEN
                ARRAY['OB003', 'template', format('unknown template %s (no active version)', quote_literal(w.template))]
            WHEN w.address IS NULL AND w.recipient_id IS NULL THEN
                ARRAY['OB002', 'recipient', format('unknown recipient %s', quote_literal(w.recipient))]
            WHEN cardinality(w.wanted) = 0 THEN
                ARRAY['OB001', 'channels', format('recipient %s can receive none of the channels of template %s (%s)',
                      quote_literal(w.recipient), quote_literal(w.template), array_to_string(w.offered, ', '))]
            WHEN NOT w.wanted <@ w.offered THEN
                ARRAY['OB003', 'template', format('template %s has no active version for channel %s',
                      quote_literal(w.template),
                      (SELECT u.c FROM unnest(w.wanted) WITH ORDINALITY AS u(c, o)
                       WHERE u.c <> ALL (w.offered) ORDER BY u.o LIMIT 1))]
        END END) AS error
        FROM wanting w
    ),
    bad AS (
        SELECT j.pos, j.error FROM judged j WHERE j.error IS NOT NULL ORDER BY j.pos LIMIT 1
    ),
    -- What is written: nothing at all if any item is bad.
    fresh AS (
        SELECT j.* FROM judged j WHERE NOT j.repeat AND NOT EXISTS (SELECT 1 FROM bad)
    ),
    made AS (
        INSERT INTO outbox.notifications AS n
            (message_id, recipient_id, address, template_key, data, category, priority,
             channels, send_at, expires_at)
        SELECT f.message_id, f.recipient_id, f.address, f.template, f.data, f.category, f.priority,
               f.wanted, f.send_at, f.expires_at
        FROM fresh f ORDER BY f.pos
        -- A concurrent transaction enqueued the same message id and committed
        -- first: its id is looked up below.
        ON CONFLICT ON CONSTRAINT notifications_message_id_key DO NOTHING
        RETURNING n.id, n.message_id
    )
    SELECT (SELECT b.pos FROM bad b), (SELECT b.error FROM bad b),
           ARRAY(SELECT coalesce(j.stored_id, m.id) FROM judged j
                 LEFT JOIN made m ON m.message_id = j.message_id ORDER BY j.pos),
           ARRAY(SELECT m.id FROM made m)
    INTO v_bad_pos, v_bad, v_ids, v_new;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = v_bad[1], COLUMN = v_bad[2],
            MESSAGE = CASE WHEN first_index IS NULL THEN format('%s: %s', caller, v_bad[3])
                           ELSE format('%s: items[%s]: %s', caller, first_index + v_bad_pos - 1, v_bad[3]) END;
    END IF;
    -- A second statement: it sees the notifications the first one inserted.
    PERFORM outbox.enqueue_deliveries(v_new);
    IF array_position(v_ids, NULL) IS NOT NULL THEN
        -- Lost a race (see Concurrency above): the winner has committed, and a new
        -- statement sees its row.
        v_ids := ARRAY(
            SELECT coalesce(v_ids[k], (SELECT n.id FROM outbox.notifications n
                                       WHERE n.message_id = (items[k]).message_id))
            FROM generate_subscripts(v_ids, 1) k ORDER BY k);
    END IF;
    RETURN v_ids;
END
$$;

COMMENT ON FUNCTION outbox.enqueue_items(outbox.enqueue_item[], text, bigint) IS
    'Enqueue a set of notifications (the core of enqueue, enqueue_many and bulk paths); returns their ids in order. Errors name the first bad item: <caller>: items[<first_index + position>]: ...';


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
LANGUAGE plpgsql  -- not sql: PL/pgSQL keeps the call's plan from one call to the next
AS $$
BEGIN
    RETURN (outbox.enqueue_items(
        ARRAY[ROW(message_id, recipient, template, data, channels, address, category, priority,
                  send_at, expires_at)::outbox.enqueue_item],
        'outbox.enqueue', NULL))[1];
END
$$;

COMMENT ON FUNCTION outbox.enqueue(text, text, text, jsonb, text[], text, text, integer, timestamptz, timestamptz) IS
    'Enqueue a notification inside the caller''s transaction; returns its id. A well-formed repeat of a message_id returns the first id and changes nothing.';


-- What a text does not read as a timestamptz: PostgreSQL's message, or NULL when
-- it reads (NULL in, NULL out). outbox.enqueue_many names the item and the field
-- around it. An exception block costs a subtransaction's start, so it is only
-- entered for values that are there.
CREATE OR REPLACE FUNCTION outbox.timestamptz_problem(value text) RETURNS text
LANGUAGE plpgsql STABLE STRICT
AS $$
BEGIN
    PERFORM value::timestamptz;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END
$$;

COMMENT ON FUNCTION outbox.timestamptz_problem(text) IS
    'Why a text is not a timestamptz (PostgreSQL''s message), or NULL if it is one; used by enqueue_many.';


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
-- The items are read in one statement into outbox.enqueue_item rows, which
-- outbox.enqueue_items checks and writes as a set.
CREATE OR REPLACE FUNCTION outbox.enqueue_many(items jsonb) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    c_fields    CONSTANT text[] := ARRAY['address', 'category', 'channels', 'data', 'expires_at',
                                         'message_id', 'priority', 'recipient', 'send_at', 'template'];
    v_rows      outbox.enqueue_item[];
    v_bad_pos   bigint;
    v_bad       text[];  -- SQLSTATE, COLUMN, the message after 'items[N]', DETAIL
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'outbox.enqueue_many: items must be a JSON array, got %', coalesce(jsonb_typeof(items), 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'items';
    END IF;

    WITH element AS (
        SELECT e.v, e.pos,
               -- The first problem of the item's keys and JSON types, in the order
               -- they have always been checked; enqueue's own checks come after.
               CASE
                   WHEN jsonb_typeof(e.v) <> 'object' THEN
                       ARRAY['OB001', 'items', format(' is not a JSON object (got %s)', jsonb_typeof(e.v))]
                   WHEN e.v - c_fields <> '{}' THEN
                       -- Quoted as JSON strings: a key may be anything, '' and ';' included.
                       ARRAY['OB001', (SELECT min(k) FROM jsonb_object_keys(e.v - c_fields) k),
                             format(' has unknown field(s) %s; expected some of %s',
                                    (SELECT string_agg(to_json(k)::text, ', ' ORDER BY k)
                                     FROM jsonb_object_keys(e.v - c_fields) k),
                                    array_to_string(c_fields, ', '))]
                   WHEN jsonb_typeof(e.v -> 'message_id') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'message_id', format(': message_id must be a string, got %s', jsonb_typeof(e.v -> 'message_id'))]
                   WHEN jsonb_typeof(e.v -> 'recipient') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'recipient', format(': recipient must be a string, got %s', jsonb_typeof(e.v -> 'recipient'))]
                   WHEN jsonb_typeof(e.v -> 'template') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'template', format(': template must be a string, got %s', jsonb_typeof(e.v -> 'template'))]
                   WHEN jsonb_typeof(e.v -> 'address') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'address', format(': address must be a string, got %s', jsonb_typeof(e.v -> 'address'))]
                   WHEN jsonb_typeof(e.v -> 'category') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'category', format(': category must be a string, got %s', jsonb_typeof(e.v -> 'category'))]
                   WHEN jsonb_typeof(e.v -> 'send_at') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'send_at', format(': send_at must be a string (a timestamp like 2026-12-24T09:00:00Z), got %s',
                             jsonb_typeof(e.v -> 'send_at'))]
                   WHEN jsonb_typeof(e.v -> 'expires_at') NOT IN ('string', 'null') THEN
                       ARRAY['OB001', 'expires_at', format(': expires_at must be a string (a timestamp like 2026-12-24T09:00:00Z), got %s',
                             jsonb_typeof(e.v -> 'expires_at'))]
                   WHEN NOT CASE jsonb_typeof(e.v -> 'priority')
                                 WHEN 'null' THEN true
                                 WHEN 'number' THEN (e.v ->> 'priority')::numeric % 1 = 0
                                 WHEN 'string' THEN e.v ->> 'priority' ~ '^ *[+-]?[0-9]+ *$'
                                 ELSE e.v -> 'priority' IS NULL END THEN
                       ARRAY['OB001', 'priority', format(': priority must be an integer, got %s', left((e.v -> 'priority')::text, 60))]
                   WHEN (e.v ->> 'priority')::numeric NOT BETWEEN -100 AND 100 THEN
                       ARRAY['OB001', 'priority', format(': priority must be between -100 and 100, got %s', left(e.v ->> 'priority', 60))]
                   WHEN CASE WHEN jsonb_typeof(e.v -> 'channels') = 'array'
                             THEN EXISTS (SELECT 1 FROM jsonb_array_elements(e.v -> 'channels') c
                                          WHERE jsonb_typeof(c) <> 'string') END THEN
                       ARRAY['OB001', 'channels', (
                           SELECT format(': channels[%s] must be a string, got %s', c.n - 1, jsonb_typeof(c.v))
                           FROM jsonb_array_elements(e.v -> 'channels') WITH ORDINALITY AS c(v, n)
                           WHERE jsonb_typeof(c.v) <> 'string' ORDER BY c.n LIMIT 1)]
                   WHEN jsonb_typeof(e.v -> 'channels') NOT IN ('null', 'string', 'array') THEN
                       ARRAY['OB001', 'channels', format(': channels must be a channel name or an array of them, got %s',
                             jsonb_typeof(e.v -> 'channels'))]
                   WHEN outbox.timestamptz_problem(e.v ->> 'send_at') IS NOT NULL THEN
                       ARRAY['OB001', 'send_at', format(': send_at %s is not a timestamp (like 2026-12-24T09:00:00Z)',
                             left((e.v -> 'send_at')::text, 60)), outbox.timestamptz_problem(e.v ->> 'send_at')]
                   WHEN outbox.timestamptz_problem(e.v ->> 'expires_at') IS NOT NULL THEN
                       ARRAY['OB001', 'expires_at', format(': expires_at %s is not a timestamp (like 2026-12-24T09:00:00Z)',
                             left((e.v -> 'expires_at')::text, 60)), outbox.timestamptz_problem(e.v ->> 'expires_at')]
               END AS problem
        FROM jsonb_array_elements(items) WITH ORDINALITY AS e(v, pos)
    ),
    parsed AS MATERIALIZED (
        SELECT el.pos, el.problem,
               CASE WHEN el.problem IS NULL THEN ROW(
                   el.v ->> 'message_id', el.v ->> 'recipient', el.v ->> 'template',
                   coalesce(nullif(el.v -> 'data', 'null'), '{}'),
                   CASE jsonb_typeof(el.v -> 'channels')
                       WHEN 'string' THEN ARRAY[el.v ->> 'channels']
                       WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(el.v -> 'channels')) END,
                   el.v ->> 'address', el.v ->> 'category',
                   coalesce((el.v ->> 'priority')::numeric::integer, 0),
                   (el.v ->> 'send_at')::timestamptz, (el.v ->> 'expires_at')::timestamptz
               )::outbox.enqueue_item END AS item
        FROM element el
    )
    SELECT (SELECT p.pos FROM parsed p WHERE p.problem IS NOT NULL ORDER BY p.pos LIMIT 1),
           (SELECT p.problem FROM parsed p WHERE p.problem IS NOT NULL ORDER BY p.pos LIMIT 1),
           (SELECT array_agg(p.item ORDER BY p.pos) FROM parsed p)
    INTO v_bad_pos, v_bad, v_rows;

    IF v_bad IS NOT NULL THEN
        -- The items before it come first: if one of them is bad, that is the error.
        -- (Those it writes are undone by the error raised here.)
        PERFORM outbox.enqueue_items(v_rows[1:v_bad_pos - 1], 'outbox.enqueue_many', 0);
        IF v_bad[4] IS NULL THEN
            RAISE EXCEPTION 'outbox.enqueue_many: items[%]%', v_bad_pos - 1, v_bad[3]
                USING ERRCODE = v_bad[1], COLUMN = v_bad[2];
        END IF;
        RAISE EXCEPTION 'outbox.enqueue_many: items[%]%', v_bad_pos - 1, v_bad[3]
            USING ERRCODE = v_bad[1], COLUMN = v_bad[2], DETAIL = v_bad[4];
    END IF;
    RETURN outbox.enqueue_items(v_rows, 'outbox.enqueue_many', 0);
END
$$;

COMMENT ON FUNCTION outbox.enqueue_many(jsonb) IS
    'Enqueue a JSON array of notifications (enqueue''s parameters as keys; unknown keys refused) in one call; returns their ids in order.';
