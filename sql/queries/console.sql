-- The operator console's own reads (outbox/console/data.py). Queue depth, the
-- dead letters, a message's timeline and the breakers come from the queries of
-- `outbox status`, `outbox inspect` and `outbox dlq` (ops.sql, dlq.sql).

-- name: console_throughput
-- Outcomes per minute over the last %(minutes)s minutes, from the events (the
-- BRIN index on created_at keeps this to the recent pages). Every minute is a
-- row, zeros included, oldest first.
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - (%(minutes)s - 1) * interval '1 minute',
                           date_trunc('minute', now()), interval '1 minute') AS minute
), counts AS (
    SELECT date_trunc('minute', e.created_at) AS minute,
           count(*) FILTER (WHERE e.kind = 'sent')      AS sent,
           count(*) FILTER (WHERE e.kind = 'delivered') AS delivered,
           count(*) FILTER (WHERE e.kind = 'retry')     AS retried,
           count(*) FILTER (WHERE e.kind = 'dead')      AS dead
    FROM outbox.events e
    WHERE e.created_at >= date_trunc('minute', now()) - (%(minutes)s - 1) * interval '1 minute'
      AND e.kind IN ('sent', 'delivered', 'retry', 'dead')
    GROUP BY 1
)
SELECT m.minute, coalesce(c.sent, 0) AS sent, coalesce(c.delivered, 0) AS delivered,
       coalesce(c.retried, 0) AS retried, coalesce(c.dead, 0) AS dead
FROM minutes m
LEFT JOIN counts c ON c.minute = m.minute
ORDER BY m.minute;

-- name: console_provider_activity
-- Per provider, outcomes over the last %(minutes)s minutes (events joined to
-- their delivery for its provider).
SELECT d.provider,
       count(*) FILTER (WHERE e.kind = 'sent')  AS sent,
       count(*) FILTER (WHERE e.kind = 'retry') AS retried,
       count(*) FILTER (WHERE e.kind = 'dead')  AS dead,
       max(e.created_at) AS last_at
FROM outbox.events e
JOIN outbox.deliveries d ON d.id = e.delivery_id
WHERE e.created_at >= now() - %(minutes)s * interval '1 minute'
  AND e.kind IN ('sent', 'retry', 'dead')
  AND d.provider IS NOT NULL
GROUP BY d.provider
ORDER BY d.provider;

-- name: console_rate_limits
-- Every configured limit; for a provider limit, the tokens its shared bucket
-- holds now (refilled to now by the rule of sql/ratelimit.sql, without writing:
-- a missing bucket is a full one). Recipient limits have one bucket per
-- person, so no single figure: NULL.
SELECT l.scope, l.name, l.rate_per_second, l.burst, l.description, l.updated_at,
       CASE WHEN l.scope <> 'provider' THEN NULL
            WHEN b.name IS NULL THEN l.burst
            ELSE least(l.burst, greatest(0, b.tokens)
                       + greatest(0, extract(epoch FROM now() - b.updated_at)) * l.rate_per_second)
       END AS tokens_now,
       (SELECT count(*) FROM outbox.rate_buckets rb
        WHERE rb.scope = l.scope AND rb.name = l.name) AS buckets
FROM outbox.rate_limits l
LEFT JOIN outbox.rate_buckets b ON b.scope = l.scope AND b.name = l.name AND b.subject = ''
                               AND l.scope = 'provider'
ORDER BY l.scope, l.name;

-- name: console_search
-- Notifications whose message id, recipient (its own id, email or phone), direct
-- address or a delivery's destination (address, number, device token) is exactly
-- %(q)s, newest first, with their deliveries' statuses. Only the message id and
-- the recipient's id are indexed: the other matches read their tables, under
-- the console's statement timeout.
WITH hits AS (
    SELECT n.id, 'message id' AS matched FROM outbox.notifications n WHERE n.message_id = %(q)s
    UNION
    SELECT n.id, 'recipient' FROM outbox.recipients r
    JOIN outbox.notifications n ON n.recipient_id = r.id
    WHERE r.external_id = %(q)s OR r.email = %(q)s OR r.phone = %(q)s
    UNION
    SELECT n.id, 'address' FROM outbox.notifications n WHERE n.address = %(q)s
    UNION
    SELECT d.notification_id, 'destination' FROM outbox.deliveries d WHERE d.destination = %(q)s
), found AS (
    SELECT h.id, string_agg(DISTINCT h.matched, ', ') AS matched FROM hits h GROUP BY h.id
)
SELECT n.message_id, r.external_id AS recipient, n.address, n.template_key, n.created_at,
       f.matched,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('channel', d.channel::text,
                                                     'status', d.status::text,
                                                     'destination', d.destination)
                                  ORDER BY d.id), '[]')
        FROM outbox.deliveries d WHERE d.notification_id = n.id) AS deliveries
FROM found f
JOIN outbox.notifications n ON n.id = f.id
LEFT JOIN outbox.recipients r ON r.id = n.recipient_id
ORDER BY n.created_at DESC, n.id DESC
LIMIT %(limit)s;
