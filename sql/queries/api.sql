-- Queries behind the public Python API (outbox/api.py). Each calls one of the
-- SQL functions installed by the migrations, so Python and plain-SQL producers
-- go through exactly the same checks.

-- name: enqueue
-- Enqueue one notification; returns its id.
SELECT outbox.enqueue(
    message_id => %(message_id)s, recipient => %(recipient)s, template => %(template)s,
    data => %(data)s::jsonb, channels => %(channels)s::text[], address => %(address)s,
    category => %(category)s, priority => %(priority)s::integer,
    send_at => %(send_at)s::timestamptz, expires_at => %(expires_at)s::timestamptz);

-- name: enqueue_many
-- Enqueue a JSON array of notifications in one round trip; returns their ids.
SELECT outbox.enqueue_many(%(items)s::jsonb);

-- name: upsert_recipient
SELECT outbox.upsert_recipient(
    recipient => %(recipient)s, email => %(email)s, phone => %(phone)s, locale => %(locale)s,
    timezone => %(timezone)s, quiet_start => %(quiet_start)s::time, quiet_end => %(quiet_end)s::time);

-- name: register_device
SELECT outbox.register_device(
    recipient => %(recipient)s, token => %(token)s, platform => %(platform)s,
    environment => %(environment)s);

-- name: deactivate_device
SELECT outbox.deactivate_device(token => %(token)s, reason => %(reason)s);

-- name: set_preference
SELECT outbox.set_preference(
    recipient => %(recipient)s, channel => %(channel)s, opted_in => %(opted_in)s,
    category => %(category)s);

-- name: cancel
-- outbox.cancel's two counts, as one value: [cancelled now, in flight].
SELECT ARRAY[c.cancelled, c.in_flight]
FROM outbox.cancel_detailed(message_id => %(message_id)s, reason => %(reason)s) c;

-- name: erase_recipient
-- Erase a recipient and their data (GDPR); returns the counts as jsonb.
SELECT outbox.erase_recipient(recipient => %(recipient)s, actor => %(actor)s);

-- name: create_template
SELECT outbox.create_template(
    key => %(key)s, channel => %(channel)s, body => %(body)s, subject => %(subject)s,
    html_body => %(html_body)s, title => %(title)s, locale => %(locale)s, activate => %(activate)s);

-- name: activate_template
SELECT outbox.activate_template(
    key => %(key)s, channel => %(channel)s, version => %(version)s, locale => %(locale)s,
    actor => %(actor)s);

-- name: create_topic
SELECT outbox.create_topic(topic => %(topic)s, description => %(description)s);

-- name: subscribe
SELECT outbox.subscribe(recipient => %(recipient)s, topic => %(topic)s);

-- name: unsubscribe
SELECT outbox.unsubscribe(recipient => %(recipient)s, topic => %(topic)s);

-- name: broadcast_topic
-- Broadcast to a topic's subscribers (or one chunk of them); the counts as one jsonb.
SELECT to_jsonb(b) FROM outbox.broadcast(
    message_id => %(message_id)s, topic => %(topic)s, template => %(template)s,
    data => %(data)s::jsonb, channels => %(channels)s::text[], category => %(category)s,
    priority => %(priority)s::integer, send_at => %(send_at)s::timestamptz,
    expires_at => %(expires_at)s::timestamptz, after_recipient => %(after_recipient)s::bigint,
    max_recipients => %(max_recipients)s::integer) b;

-- name: broadcast_list
-- Broadcast to a list of recipient ids; the counts as one jsonb.
SELECT to_jsonb(b) FROM outbox.broadcast_list(
    message_id => %(message_id)s, recipients => %(recipients)s::text[], template => %(template)s,
    data => %(data)s::jsonb, channels => %(channels)s::text[], category => %(category)s,
    priority => %(priority)s::integer, send_at => %(send_at)s::timestamptz,
    expires_at => %(expires_at)s::timestamptz) b;

-- name: broadcast_segment
-- Broadcast to the recipients an SQL query returns (or one chunk of them); the counts as one jsonb.
SELECT to_jsonb(b) FROM outbox.broadcast_segment(
    message_id => %(message_id)s, segment => %(segment)s, template => %(template)s,
    data => %(data)s::jsonb, channels => %(channels)s::text[], category => %(category)s,
    priority => %(priority)s::integer, send_at => %(send_at)s::timestamptz,
    expires_at => %(expires_at)s::timestamptz, after_recipient => %(after_recipient)s,
    max_recipients => %(max_recipients)s::integer) b;

-- name: cancel_broadcast
-- outbox.cancel_broadcast's two counts, as one value: [cancelled now, in flight].
SELECT ARRAY[c.cancelled, c.in_flight]
FROM outbox.cancel_broadcast(message_id => %(message_id)s, reason => %(reason)s) c;

-- The streaming bulk path (outbox.enqueue_stream): a savepoint around it all, a
-- temporary staging table, per chunk a COPY into it and one set-based
-- outbox.enqueue_items over its rows; the table is dropped at the end (and at
-- commit, or with the savepoint, whatever happens).

-- name: stream_savepoint
SAVEPOINT outbox_enqueue_stream;

-- name: stream_release
RELEASE SAVEPOINT outbox_enqueue_stream;

-- name: stream_rollback
-- After an error: undo everything the stream wrote, keep the caller's transaction.
ROLLBACK TO SAVEPOINT outbox_enqueue_stream;

-- name: stream_stage
CREATE TEMPORARY TABLE outbox_enqueue_stream (pos bigint NOT NULL, LIKE outbox.enqueue_item)
    ON COMMIT DROP;

-- name: stream_copy
-- The columns in the order of outbox.calls.STREAM_COLUMNS (enqueue's arguments).
COPY pg_temp.outbox_enqueue_stream (pos, message_id, template, recipient, data, channels, address,
                                    category, priority, send_at, expires_at) FROM STDIN;

-- name: stream_chunk
-- Enqueue the staged chunk; errors name items by their index in the whole stream
-- (first: the index of the chunk's first item). Returns how many were enqueued.
SELECT cardinality(outbox.enqueue_items(
    ARRAY(SELECT ROW(s.message_id, s.recipient, s.template, s.data, s.channels, s.address,
                     s.category, s.priority, s.send_at, s.expires_at)::outbox.enqueue_item
          FROM pg_temp.outbox_enqueue_stream s ORDER BY s.pos),
    'outbox.enqueue_stream', %(first)s));

-- name: stream_clear
TRUNCATE pg_temp.outbox_enqueue_stream;

-- name: stream_unstage
DROP TABLE pg_temp.outbox_enqueue_stream;
