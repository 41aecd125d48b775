-- SQL of benchmarks/retention.py, run only in that benchmark's own databases.
-- The claim and the record it measures are the product's own (sql/queries/worker.sql).

-- name: retention_template
-- A template every benchmark notification renders with (not rendered here, but
-- the claim resolves it, as for real).
SELECT outbox.create_template(key => 'bench', channel => 'email', body => 'Hello {{ n }}',
                              subject => 'Bench', activate => true);

-- name: retention_history
-- Finished history rows %(first)s..%(last)s: notification + delivery + %(events)s
-- events each (created, processing, the outcome, delivered), set-based. Ids grow
-- with time, as in production: history is older than anything queued later.
WITH n AS (
    INSERT INTO outbox.notifications (message_id, address, template_key, data, channels, created_at)
    SELECT 'hist-' || g, 'user' || g || '@example.com', 'bench', jsonb_build_object('n', g),
           ARRAY['email']::outbox.channel[],
           now() - interval '60 days' + (g::float8 / %(total)s) * interval '29 days'
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    RETURNING id, address, created_at
), d AS (
    INSERT INTO outbox.deliveries
        (notification_id, channel, destination, status, attempts, max_attempts, provider,
         provider_message_id, last_error, created_at, updated_at, sent_at, delivered_at,
         finished_at,
         next_attempt_at)
    SELECT n.id, 'email', n.address, s.status::outbox.delivery_status, s.attempts, 8,
           'sendgrid', CASE WHEN s.status IN ('sent', 'delivered') THEN 'sg-' || n.id END,
           s.error, n.created_at, n.created_at + interval '2 seconds',
           CASE WHEN s.status IN ('sent', 'delivered') THEN n.created_at + interval '1 second' END,
           CASE WHEN s.status = 'delivered' THEN n.created_at + interval '5 seconds' END,
           n.created_at + interval '2 seconds', n.created_at
    FROM n
    CROSS JOIN LATERAL (
        SELECT CASE WHEN k < 90 THEN 'sent' WHEN k < 94 THEN 'delivered' WHEN k < 97 THEN 'dead'
                    WHEN k < 99 THEN 'suppressed' ELSE 'expired' END AS status,
               CASE WHEN k BETWEEN 94 AND 96 THEN 8 WHEN k >= 97 AND k < 99 THEN 0 ELSE 1 END
                   AS attempts,
               CASE WHEN k BETWEEN 94 AND 96 THEN 'sendgrid: 550 mailbox unavailable'
                    WHEN k BETWEEN 97 AND 98 THEN 'opted out of email'
                    WHEN k = 99 THEN 'expired before it could be sent' END AS error
        FROM (SELECT (n.id %% 100)::int AS k) AS kk
    ) s
    RETURNING id, notification_id, created_at, status
)
INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, created_at)
SELECT d.notification_id, d.id, e.kind, e.attempt, 'bench', d.created_at + e.after
FROM d
CROSS JOIN LATERAL (
    VALUES (1, 'created', 0, interval '0'),
           (2, 'processing', 1, interval '1 second'),
           (3, CASE d.status WHEN 'delivered' THEN 'sent' ELSE d.status::text END, 1,
               interval '2 seconds'),
           (4, 'delivered', 1, interval '5 seconds')
) AS e(ord, kind, attempt, after)
WHERE e.ord <= %(events)s AND (e.ord < 4 OR d.status = 'delivered');

-- name: retention_queue
-- %(n)s pending email deliveries to drain in one round, as enqueue leaves them.
WITH n AS (
    INSERT INTO outbox.notifications (message_id, address, template_key, data, channels)
    SELECT %(prefix)s || g, 'queued' || g || '@example.com', 'bench', jsonb_build_object('n', g),
           ARRAY['email']::outbox.channel[]
    FROM generate_series(1, %(n)s) AS g
    RETURNING id, address
), d AS (
    INSERT INTO outbox.deliveries (notification_id, channel, destination, max_attempts)
    SELECT n.id, 'email', n.address, 8 FROM n
    RETURNING id, notification_id
)
INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt)
SELECT d.notification_id, d.id, 'created', 0 FROM d;

-- name: retention_counts
-- What the history database holds.
SELECT (SELECT count(*) FROM outbox.deliveries) AS deliveries,
       (SELECT count(*) FROM outbox.deliveries
        WHERE status NOT IN ('pending', 'processing')) AS finished,
       (SELECT count(*) FROM outbox.events) AS events,
       pg_total_relation_size('outbox.deliveries') AS deliveries_bytes,
       pg_total_relation_size('outbox.events') AS events_bytes;

-- name: retention_clean
-- The rounds' rows (ids above the history's): deliveries go by the foreign key's
-- cascade.
WITH gone AS (DELETE FROM outbox.notifications n WHERE n.id > %(floor)s RETURNING n.id)
DELETE FROM outbox.events e USING gone g WHERE e.notification_id = g.id;

-- name: retention_max_id
-- The history's last notification: rows above it are the rounds' own.
SELECT coalesce(max(id), 0) FROM outbox.notifications;

-- name: retention_vacuum
-- Between rounds and sizes: the same steady state for both databases.
VACUUM (ANALYZE) outbox.notifications, outbox.deliveries, outbox.events;
-- name: retention_checkpoint
-- Each size measured from the same steady state (needs pg_checkpoint or superuser).
CHECKPOINT;

-- name: retention_analyze
-- The fresh pending rows, as autovacuum would (only this table: sampling the
-- big history tables every round would cost more than the round).
ANALYZE outbox.deliveries;
