-- Queries of `outbox send` (outbox/cli/send.py) around a broadcast; the broadcast
-- itself is the API's (sql/queries/api.sql, broadcast_*).

-- name: send_topic_size
-- How many subscribers a topic has: the length of the progress bar.
SELECT count(*) FROM outbox.subscriptions s JOIN outbox.topics t ON t.id = s.topic_id
WHERE t.name = %(topic)s;

-- name: send_segment_size
-- How many distinct recipient ids a segment returns (the segment is spliced in
-- as SQL by psycopg.sql, and runs as the caller, as broadcast_segment runs it).
SELECT count(DISTINCT segment.x) FROM ({segment}) AS segment(x) WHERE segment.x IS NOT NULL;
