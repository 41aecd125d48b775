-- Topics, subscriptions and broadcasts: one call enqueues a notification to many
-- recipients, inside the caller's transaction, in one statement.
--
--   SELECT outbox.create_topic('newsletter', 'The monthly letter');
--   SELECT outbox.subscribe(recipient => 'user-7', topic => 'newsletter');
--   SELECT * FROM outbox.broadcast(message_id => 'letter-2026-12', topic => 'newsletter',
--                                  template => 'letter', data => '{"month": "December"}');
--   SELECT * FROM outbox.broadcast_segment(message_id => 'fr-promo', template => 'promo',
--       segment => 'SELECT user_id::text FROM app.users WHERE country = ''FR''');
--
-- Three ways to name who receives it: every subscriber of a topic (broadcast),
-- a list of recipient ids (broadcast_list), or the result of an SQL query
-- returning recipient ids (broadcast_segment, run with the caller's own
-- privileges). Each recipient reached gets one notification of their own, with
-- the message id '<message_id>/<outbox.recipients.id>' and broadcast_id set
-- (sql/schema.sql, outbox.broadcasts), so outbox inspect, timelines, outbox.cancel
-- and retention treat it as any other; cancel_broadcast cancels them all.
--
-- Idempotent per (message id, recipient): the first call records the broadcast
-- and its content (template, data, channels, category, priority, send_at,
-- expires_at); a later call with the same message id reuses that content, as a
-- repeated enqueue does, and enqueues only for the recipients it names that have
-- no notification of this broadcast yet. So a broadcast rerun after new
-- subscribers joined reaches just them, and one interrupted between chunks
-- (after_recipient / max_recipients, each chunk its own transaction) is finished
-- by running it again: no recipient is enqueued twice. Two runs at once are safe
-- too: the second one's insert of a recipient waits for the first's and then
-- skips it.
--
-- Each notification is enqueued as outbox.enqueue would enqueue it for that
-- recipient: the same destinations, suppressions, preferences (a critical
-- category bypasses opt-outs) and deliveries recorded suppressed or expired.
-- Where enqueue would refuse a recipient because they can receive none of the
-- template's channels (no channels given, no address nor active device), a
-- broadcast skips them and counts them 'unreachable': a rerun reaches them once
-- they can receive something.
--
-- Each broadcast function returns one row:
--   targets         recipients this call looked at (distinct ids),
--   enqueued        notifications created now,
--   already         recipients that had one from an earlier run,
--   unreachable     recipients skipped (no channel they can receive),
--   unknown         ids no recipient has (broadcast_list and broadcast_segment),
--   last_recipient  the last recipient id of this chunk (NULL if none): pass it as
--                   after_recipient to do the next chunk.
-- targets = enqueued + already + unreachable + unknown.
--
-- Bad input raises SQLSTATE class OB as enqueue does, naming the argument in the
-- error's COLUMN field; nothing is written.

-- ---------------------------------------------------------------------------
-- outbox.create_topic: create a topic (or update its description); returns its id.
CREATE OR REPLACE FUNCTION outbox.create_topic(topic text, description text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_id bigint;
BEGIN
    IF topic IS NULL OR length(topic) > 64 OR topic !~ '^[a-z0-9][a-z0-9_.-]*$' THEN
        RAISE EXCEPTION 'outbox.create_topic: topic % is not a valid name (1 to 64 lowercase letters, digits, _ . -, starting with a letter or digit)',
            coalesce(quote_literal(topic), 'NULL') USING ERRCODE = 'OB001', COLUMN = 'topic';
    END IF;
    IF length(description) > 1000 THEN
        RAISE EXCEPTION 'outbox.create_topic: description is % characters, the limit is 1000', length(description)
            USING ERRCODE = 'OB001', COLUMN = 'description';
    END IF;
    INSERT INTO outbox.topics AS t (name, description) VALUES (topic, description)
    ON CONFLICT ON CONSTRAINT topics_name_key DO UPDATE SET description = coalesce(excluded.description, t.description)
    RETURNING t.id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION outbox.create_topic(text, text) IS
    'Create a topic recipients can subscribe to, or update its description (NULL keeps it); returns its id.';


-- outbox.subscription_target: the recipient's and the topic's ids, or the error
-- naming the one that does not exist. A helper of subscribe and unsubscribe.
CREATE OR REPLACE FUNCTION outbox.subscription_target(fn text, recipient text, topic text,
                                                      OUT recipient_id bigint, OUT topic_id bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
BEGIN
    SELECT r.id INTO recipient_id FROM outbox.recipients r WHERE r.external_id = recipient;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.%: unknown recipient %', fn, coalesce(quote_literal(recipient), 'NULL')
            USING ERRCODE = 'OB002', COLUMN = 'recipient';
    END IF;
    SELECT t.id INTO topic_id FROM outbox.topics t WHERE t.name = topic;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.%: unknown topic % (create it with outbox.create_topic)', fn,
            coalesce(quote_literal(topic), 'NULL') USING ERRCODE = 'OB001', COLUMN = 'topic';
    END IF;
END
$$;
COMMENT ON FUNCTION outbox.subscription_target(text, text, text) IS
    'The ids of a recipient and a topic, or an OB error naming the unknown one (helper of subscribe and unsubscribe).';


-- outbox.subscribe: subscribe a recipient to a topic; false if already subscribed.
CREATE OR REPLACE FUNCTION outbox.subscribe(recipient text, topic text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v outbox.subscriptions;
BEGIN
    SELECT s.recipient_id, s.topic_id INTO v.recipient_id, v.topic_id
    FROM outbox.subscription_target('subscribe', recipient, topic) s;
    INSERT INTO outbox.subscriptions (topic_id, recipient_id) VALUES (v.topic_id, v.recipient_id)
    ON CONFLICT ON CONSTRAINT subscriptions_pkey DO NOTHING;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION outbox.subscribe(text, text) IS
    'Subscribe a recipient to a topic; returns false if they already were.';


-- outbox.unsubscribe: unsubscribe a recipient from a topic (the row is deleted);
-- false if they were not subscribed. Notifications already enqueued to them by a
-- broadcast stay (outbox.cancel cancels one).
CREATE OR REPLACE FUNCTION outbox.unsubscribe(recipient text, topic text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v outbox.subscriptions;
BEGIN
    SELECT s.recipient_id, s.topic_id INTO v.recipient_id, v.topic_id
    FROM outbox.subscription_target('unsubscribe', recipient, topic) s;
    DELETE FROM outbox.subscriptions s WHERE s.topic_id = v.topic_id AND s.recipient_id = v.recipient_id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION outbox.unsubscribe(text, text) IS
    'Unsubscribe a recipient from a topic; returns false if they were not subscribed.';


-- ---------------------------------------------------------------------------
-- outbox.broadcast_open: the broadcast with this message id, recorded now if it is
-- new. The form of the arguments is checked on every call (a malformed rerun
-- fails too, as a malformed repeat of enqueue does); a rerun then gets the
-- stored broadcast, whatever content it gives. A new one is checked against the
-- clock and the templates first. A helper of the broadcast functions: `fn` names
-- the caller in errors.
CREATE OR REPLACE FUNCTION outbox.broadcast_open(
    fn text, message_id text, topic_id bigint, template text, data jsonb, channels text[],
    category text, priority integer, send_at timestamptz, expires_at timestamptz
) RETURNS outbox.broadcasts
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    c_blank    CONSTANT text := '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$';
    c_horizon  CONSTANT interval := interval '1 year';
    v          outbox.broadcasts;
    v_ch       text;
    v_wanted   outbox.channel[];
    v_channels outbox.channel[];
BEGIN
    IF message_id IS NULL OR length(message_id) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'outbox.%: message_id must be 1 to 200 characters, got %', fn,
            coalesce(length(message_id)::text || ' characters', 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'message_id';
    END IF;
    IF message_id ~ c_blank THEN
        RAISE EXCEPTION 'outbox.%: message_id is blank (white space only)', fn
            USING ERRCODE = 'OB001', COLUMN = 'message_id';
    END IF;
    IF template IS NULL OR template ~ c_blank THEN
        RAISE EXCEPTION 'outbox.%: template is required', fn USING ERRCODE = 'OB001', COLUMN = 'template';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'outbox.%: data must be a JSON object, got %', fn, coalesce(jsonb_typeof(data), 'NULL')
            USING ERRCODE = 'OB001', COLUMN = 'data';
    END IF;
    IF octet_length(data::text) > 65536 THEN
        RAISE EXCEPTION 'outbox.%: data is % bytes, the limit is 65536', fn, octet_length(data::text)
            USING ERRCODE = 'OB001', COLUMN = 'data';
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN -100 AND 100 THEN
        RAISE EXCEPTION 'outbox.%: priority must be between -100 and 100, got %', fn, priority
            USING ERRCODE = 'OB001', COLUMN = 'priority';
    END IF;
    IF NOT isfinite(send_at) THEN
        RAISE EXCEPTION 'outbox.%: send_at must be a finite time, got % (NULL sends now)', fn, send_at
            USING ERRCODE = 'OB001', COLUMN = 'send_at';
    END IF;
    IF NOT isfinite(expires_at) THEN
        RAISE EXCEPTION 'outbox.%: expires_at must be a finite time, got % (NULL never expires)', fn, expires_at
            USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    IF expires_at <= send_at THEN
        RAISE EXCEPTION 'outbox.%: expires_at (%) is not after send_at (%)', fn, expires_at, send_at
            USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    IF category IS NOT NULL AND (length(category) > 64 OR category !~ '^[a-z0-9][a-z0-9_.-]*$') THEN
        RAISE EXCEPTION 'outbox.%: category % is not a valid name (lowercase letters, digits, _ . -)', fn,
            quote_literal(category) USING ERRCODE = 'OB001', COLUMN = 'category';
    END IF;
    IF channels IS NOT NULL THEN
        IF cardinality(channels) = 0 THEN
            RAISE EXCEPTION 'outbox.%: channels is empty', fn USING ERRCODE = 'OB001', COLUMN = 'channels';
        END IF;
        FOREACH v_ch IN ARRAY channels LOOP
            IF v_ch IS NULL OR v_ch NOT IN ('email', 'sms', 'push') THEN
                RAISE EXCEPTION 'outbox.%: unknown channel % (expected email, sms or push)', fn,
                    coalesce(quote_literal(v_ch), 'NULL') USING ERRCODE = 'OB004', COLUMN = 'channels';
            END IF;
        END LOOP;
        v_wanted := ARRAY(SELECT DISTINCT c::outbox.channel FROM unnest(channels) c ORDER BY 1);
    END IF;

    -- A rerun: the stored broadcast, before the checks that depend on the clock.
    SELECT * INTO v FROM outbox.broadcasts b WHERE b.message_id = broadcast_open.message_id;
    IF FOUND THEN
        RETURN v;
    END IF;

    IF send_at NOT BETWEEN now() - c_horizon AND now() + c_horizon THEN
        RAISE EXCEPTION 'outbox.%: send_at % is more than a year from now (NULL sends now)', fn, send_at
            USING ERRCODE = 'OB001', COLUMN = 'send_at';
    END IF;
    IF expires_at > coalesce(send_at, now()) + c_horizon OR expires_at < now() - c_horizon THEN
        RAISE EXCEPTION 'outbox.%: expires_at % is more than a year after the send or more than a year ago', fn,
            expires_at USING ERRCODE = 'OB001', COLUMN = 'expires_at';
    END IF;
    SELECT array_agg(DISTINCT t.channel ORDER BY t.channel) INTO v_channels
    FROM outbox.templates t WHERE t.key = template AND t.active;
    IF v_channels IS NULL THEN
        RAISE EXCEPTION 'outbox.%: unknown template % (no active version)', fn, quote_literal(template)
            USING ERRCODE = 'OB003', COLUMN = 'template';
    END IF;
    IF NOT v_wanted <@ v_channels THEN
        RAISE EXCEPTION 'outbox.%: template % has no active version for channel %', fn, quote_literal(template),
            array_to_string(ARRAY(SELECT unnest(v_wanted) EXCEPT SELECT unnest(v_channels)), ', ')
            USING ERRCODE = 'OB003', COLUMN = 'template';
    END IF;

    INSERT INTO outbox.broadcasts AS b
        (message_id, topic_id, template_key, data, channels, category, priority, send_at, expires_at)
    VALUES (message_id, topic_id, template, data, v_wanted, category, priority, send_at, expires_at)
    ON CONFLICT ON CONSTRAINT broadcasts_message_id_key DO NOTHING
    RETURNING * INTO v;
    IF NOT FOUND THEN
        -- A concurrent call recorded it first (and committed).
        SELECT * INTO v FROM outbox.broadcasts b WHERE b.message_id = broadcast_open.message_id;
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION outbox.broadcast_open(text, text, bigint, text, jsonb, text[], text, integer, timestamptz, timestamptz) IS
    'The broadcast with this message id, checked and recorded if new (helper of the broadcast functions).';


-- outbox.broadcast_insert: enqueue broadcast `b` to the recipients `recipient_ids`
-- (outbox.recipients.id, each existing) that have no notification of it yet: one
-- INSERT of their notifications (linked to the broadcast, the content checked
-- once by broadcast_open rather than per recipient), then the deliveries and
-- events of the new ones by outbox.enqueue_deliveries, the expansion enqueue
-- itself runs on. Returns (enqueued, already, unreachable) as described at the
-- top of this file.
CREATE OR REPLACE FUNCTION outbox.broadcast_insert(
    fn text, b outbox.broadcasts, recipient_ids bigint[],
    OUT enqueued integer, OUT already integer, OUT unreachable integer
)
LANGUAGE plpgsql
-- PL/pgSQL would plan these statements for each of their first calls with the
-- whole id array as a constant, which costs seconds per thousands of ids; the
-- generic plan is as good and made once per session.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_variable
DECLARE
    v_offered  outbox.channel[];
    v_new      bigint[];
    v_wanted   integer;
BEGIN
    IF b.cancelled_at IS NOT NULL THEN
        RAISE EXCEPTION 'outbox.%: broadcast % was cancelled at % (%); give a new message_id to send it again',
            fn, quote_literal(b.message_id), b.cancelled_at, b.cancel_reason
            USING ERRCODE = 'OB005', COLUMN = 'message_id';
    END IF;
    -- A rerun enqueues new notifications, so it needs the template still active
    -- for the broadcast's channels.
    SELECT array_agg(DISTINCT t.channel ORDER BY t.channel) INTO v_offered
    FROM outbox.templates t WHERE t.key = b.template_key AND t.active;
    IF v_offered IS NULL OR NOT b.channels <@ v_offered THEN
        RAISE EXCEPTION 'outbox.%: template % has no active version for the broadcast''s channels (%)',
            fn, quote_literal(b.template_key), coalesce(array_to_string(b.channels, ', '), 'any')
            USING ERRCODE = 'OB003', COLUMN = 'template';
    END IF;

    WITH wanted AS (
        -- The channels of each notification, as enqueue resolves them: the ones
        -- asked for, or every channel the template has and the recipient can
        -- receive. Where that is none, enqueue refuses the recipient; a broadcast
        -- leaves them out (unreachable).
        SELECT r.id,
               coalesce(b.channels, ARRAY(
                   SELECT c FROM unnest(v_offered) c
                   WHERE (c = 'email' AND r.email IS NOT NULL)
                      OR (c = 'sms' AND r.phone IS NOT NULL)
                      OR (c = 'push' AND EXISTS (SELECT 1 FROM outbox.devices d
                                                  WHERE d.recipient_id = r.id AND d.active)))) AS channels
        FROM outbox.recipients r
        WHERE r.id = ANY (recipient_ids)
    ),
    made AS (
        -- No conflict target: a notification of this broadcast for the recipient
        -- (broadcast_id, recipient_id), or its message id taken, both skip it.
        INSERT INTO outbox.notifications AS n
            (message_id, recipient_id, template_key, data, category, priority, channels,
             send_at, expires_at, broadcast_id)
        SELECT b.message_id || '/' || w.id, w.id, b.template_key, b.data, b.category, b.priority,
               w.channels, b.send_at, b.expires_at, b.id
        FROM wanted w
        WHERE cardinality(w.channels) > 0
        ORDER BY w.id
        ON CONFLICT DO NOTHING
        RETURNING n.id
    )
    SELECT ARRAY(SELECT m.id FROM made m), (SELECT count(*) FROM wanted w WHERE cardinality(w.channels) > 0)
    INTO v_new, v_wanted;
    PERFORM outbox.enqueue_deliveries(v_new);
    enqueued := cardinality(v_new);
    already := v_wanted - enqueued;
    unreachable := cardinality(recipient_ids) - v_wanted;
END
$$;
COMMENT ON FUNCTION outbox.broadcast_insert(text, outbox.broadcasts, bigint[]) IS
    'Enqueue a broadcast to the given recipients that have none of its notifications yet (helper; deliveries by outbox.enqueue_deliveries).';


-- ---------------------------------------------------------------------------
-- outbox.broadcast: enqueue to every subscriber of a topic, in one statement.
-- after_recipient and max_recipients make it one chunk of the subscribers in
-- recipient id order (ids above after_recipient, at most max_recipients of
-- them); both NULL: every subscriber at once.
CREATE OR REPLACE FUNCTION outbox.broadcast(
    message_id       text,
    topic            text,
    template         text,
    data             jsonb DEFAULT '{}',
    channels         text[] DEFAULT NULL,
    category         text DEFAULT NULL,
    priority         integer DEFAULT 0,
    send_at          timestamptz DEFAULT NULL,
    expires_at       timestamptz DEFAULT NULL,
    after_recipient  bigint DEFAULT NULL,
    max_recipients   integer DEFAULT NULL
) RETURNS TABLE (targets integer, enqueued integer, already integer, unreachable integer,
                 unknown integer, last_recipient bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_topic  bigint;
    v_b      outbox.broadcasts;
    v_ids    bigint[];
BEGIN
    IF max_recipients < 1 THEN
        RAISE EXCEPTION 'outbox.broadcast: max_recipients must be at least 1, got %', max_recipients
            USING ERRCODE = 'OB001', COLUMN = 'max_recipients';
    END IF;
    SELECT t.id INTO v_topic FROM outbox.topics t WHERE t.name = topic;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.broadcast: unknown topic % (create it with outbox.create_topic)',
            coalesce(quote_literal(topic), 'NULL') USING ERRCODE = 'OB001', COLUMN = 'topic';
    END IF;
    v_b := outbox.broadcast_open('broadcast', message_id, v_topic, template, data, channels, category,
                                 priority, send_at, expires_at);
    v_ids := ARRAY(SELECT s.recipient_id FROM outbox.subscriptions s
                   WHERE s.topic_id = v_topic AND s.recipient_id > coalesce(after_recipient, 0)
                   ORDER BY s.recipient_id LIMIT max_recipients);
    SELECT i.enqueued, i.already, i.unreachable INTO enqueued, already, unreachable
    FROM outbox.broadcast_insert('broadcast', v_b, v_ids) i;
    targets := cardinality(v_ids);
    unknown := 0;
    last_recipient := v_ids[cardinality(v_ids)];
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION outbox.broadcast(text, text, text, jsonb, text[], text, integer, timestamptz, timestamptz, bigint, integer) IS
    'Enqueue a notification to every subscriber of a topic (or one chunk of them), once per recipient per message_id.';


-- outbox.broadcast_list: enqueue to the recipients with the given ids (the
-- application's user ids, as given to upsert_recipient), in one statement. Ids no
-- recipient has are counted as unknown, not refused: a segment of the
-- application's users names some that were never registered.
CREATE OR REPLACE FUNCTION outbox.broadcast_list(
    message_id  text,
    recipients  text[],
    template    text,
    data        jsonb DEFAULT '{}',
    channels    text[] DEFAULT NULL,
    category    text DEFAULT NULL,
    priority    integer DEFAULT 0,
    send_at     timestamptz DEFAULT NULL,
    expires_at  timestamptz DEFAULT NULL
) RETURNS TABLE (targets integer, enqueued integer, already integer, unreachable integer,
                 unknown integer, last_recipient text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_b      outbox.broadcasts;
    v_ids    bigint[];
BEGIN
    IF recipients IS NULL THEN
        RAISE EXCEPTION 'outbox.broadcast_list: recipients must be an array of recipient ids, got NULL'
            USING ERRCODE = 'OB001', COLUMN = 'recipients';
    END IF;
    v_b := outbox.broadcast_open('broadcast_list', message_id, NULL, template, data, channels, category,
                                 priority, send_at, expires_at);
    SELECT count(DISTINCT x), max(x) INTO targets, last_recipient
    FROM unnest(recipients) x WHERE x IS NOT NULL;
    v_ids := ARRAY(SELECT r.id FROM outbox.recipients r WHERE r.external_id = ANY (recipients) ORDER BY r.id);
    SELECT i.enqueued, i.already, i.unreachable INTO enqueued, already, unreachable
    FROM outbox.broadcast_insert('broadcast_list', v_b, v_ids) i;
    unknown := targets - cardinality(v_ids);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION outbox.broadcast_list(text, text[], text, jsonb, text[], text, integer, timestamptz, timestamptz) IS
    'Enqueue a notification to the recipients with the given ids, once per recipient per message_id; unknown ids are counted.';


-- outbox.broadcast_segment: enqueue to the recipients an SQL query returns.
--
-- `segment` is one SELECT (or VALUES, or WITH ... SELECT) returning one column of
-- recipient ids as text (the application's user ids):
--     SELECT u.id::text FROM app.users u WHERE u.plan = 'pro'
-- It runs with the privileges of the caller, not of the outbox schema's owner:
-- this function is SECURITY INVOKER and keeps the caller's search_path, so a
-- segment reads what its caller may read, and nothing more; only the insert of
-- the notifications (outbox.broadcast_list) runs as the owner. A segment is
-- refused with OB001 naming `segment` when it does not parse or run, returns
-- more than one column, or a column that is not text or varchar (cast it:
-- user_id::text); one that modifies data cannot run (PostgreSQL refuses a
-- data-modifying WITH inside a subquery). NULL ids are ignored.
-- after_recipient and max_recipients make it one chunk: the ids above
-- after_recipient (in the column's collation order), at most max_recipients of
-- them. Each chunk runs the segment again, so give the chunk loop a segment
-- whose filter on its id column is cheap.
CREATE OR REPLACE FUNCTION outbox.broadcast_segment(
    message_id       text,
    segment          text,
    template         text,
    data             jsonb DEFAULT '{}',
    channels         text[] DEFAULT NULL,
    category         text DEFAULT NULL,
    priority         integer DEFAULT 0,
    send_at          timestamptz DEFAULT NULL,
    expires_at       timestamptz DEFAULT NULL,
    after_recipient  text DEFAULT NULL,
    max_recipients   integer DEFAULT NULL
) RETURNS TABLE (targets integer, enqueued integer, already integer, unreachable integer,
                 unknown integer, last_recipient text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_query  text;
    v_type   regtype;
    v_ids    text[];
    v_state  text;
    v_msg    text;
BEGIN
    -- A trailing semicolon is what a query typed in psql ends with: not an error.
    v_query := regexp_replace(coalesce(segment, ''), '[[:space:];]+$', '');
    IF v_query ~ '^[[:space:]]*$' THEN
        RAISE EXCEPTION 'outbox.broadcast_segment: segment is empty; give a query returning recipient ids, like SELECT id::text FROM app.users'
            USING ERRCODE = 'OB001', COLUMN = 'segment';
    END IF;
    IF max_recipients < 1 THEN
        RAISE EXCEPTION 'outbox.broadcast_segment: max_recipients must be at least 1, got %', max_recipients
            USING ERRCODE = 'OB001', COLUMN = 'max_recipients';
    END IF;
    BEGIN
        -- The type of the one column, without running the query (LIMIT 0); a
        -- scalar subquery refuses more than one column.
        EXECUTE format('SELECT pg_typeof((SELECT * FROM (%s) AS segment LIMIT 0))', v_query) INTO v_type;
        IF v_type NOT IN ('text'::regtype, 'character varying'::regtype) THEN
            RAISE EXCEPTION USING ERRCODE = 'OB001', MESSAGE = format(
                'returns %s; it must return recipient ids as text (the ids given to upsert_recipient): cast the column, e.g. SELECT user_id::text FROM ...',
                v_type);
        END IF;
        EXECUTE format('SELECT ARRAY(SELECT DISTINCT x FROM (%s) AS segment(x) '
                       'WHERE x IS NOT NULL AND ($1 IS NULL OR x > $1) ORDER BY x LIMIT $2)', v_query)
            INTO v_ids USING after_recipient, max_recipients;
    EXCEPTION
        WHEN syntax_error_or_access_rule_violation OR data_exception OR feature_not_supported
             OR SQLSTATE 'OB001' THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF v_msg = 'subquery must return only one column' THEN
                v_msg := 'returns more than one column; it must return one, the recipient ids';
            ELSIF v_state <> 'OB001' THEN
                v_msg := 'fails: ' || v_msg;
            END IF;
            RAISE EXCEPTION 'outbox.broadcast_segment: segment %', v_msg
                USING ERRCODE = 'OB001', COLUMN = 'segment', DETAIL = 'SQLSTATE ' || v_state;
    END;
    RETURN QUERY
    SELECT l.targets, l.enqueued, l.already, l.unreachable, l.unknown, v_ids[cardinality(v_ids)]
    FROM outbox.broadcast_list(message_id, v_ids, template, data, channels, category, priority,
                               send_at, expires_at) l;
END
$$;
COMMENT ON FUNCTION outbox.broadcast_segment(text, text, text, jsonb, text[], text, integer, timestamptz, timestamptz, text, integer) IS
    'Enqueue a notification to the recipients an SQL query (run with the caller''s privileges) returns, once per recipient per message_id.';


-- outbox.cancel_broadcast: cancel every unsent delivery of a broadcast's
-- notifications, as outbox.cancel does for one (outbox.cancel_notifications), and
-- mark the broadcast cancelled so that a rerun enqueues nothing more.
-- Returns (cancelled, in_flight) summed over its notifications.
CREATE OR REPLACE FUNCTION outbox.cancel_broadcast(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS TABLE (cancelled integer, in_flight integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_id bigint;
BEGIN
    UPDATE outbox.broadcasts b
    SET cancelled_at = coalesce(b.cancelled_at, now()), cancel_reason = coalesce(b.cancel_reason, reason, 'cancelled')
    WHERE b.message_id = cancel_broadcast.message_id
    RETURNING b.id INTO v_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.cancel_broadcast: no broadcast with message_id %', coalesce(quote_literal(message_id), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'message_id';
    END IF;
    RETURN QUERY
    SELECT c.cancelled, c.in_flight
    FROM outbox.cancel_notifications(
        ARRAY(SELECT n.id FROM outbox.notifications n WHERE n.broadcast_id = v_id), reason) c;
END
$$;
COMMENT ON FUNCTION outbox.cancel_broadcast(text, text) IS
    'Cancel the unsent deliveries of every notification of a broadcast, and its reruns: (cancelled now, in_flight).';
