-- Views for DBAs and on-call engineers. Read them with psql:
--   SELECT * FROM outbox.queue_depth;
--   SELECT * FROM outbox.dead_letters LIMIT 20;
--   SELECT * FROM outbox.message_timeline WHERE message_id = 'order-42-confirmed';

-- What is waiting or in flight, by channel. Reads only the partial indexes of
-- unfinished rows, so it stays cheap however much history is kept.
CREATE OR REPLACE VIEW outbox.queue_depth AS
SELECT d.channel,
       d.status,
       count(*) FILTER (WHERE d.status = 'processing' OR d.next_attempt_at <= now()) AS due,
       count(*) FILTER (WHERE d.status = 'pending' AND d.next_attempt_at > now())    AS scheduled,
       count(*)                                                                   AS total
FROM outbox.deliveries d
WHERE d.status IN ('pending', 'processing')
GROUP BY d.channel, d.status;
COMMENT ON VIEW outbox.queue_depth IS
    'Unfinished deliveries by channel and status: due now (or in flight) vs scheduled for later.';

-- How long the oldest due delivery of each channel has been waiting.
CREATE OR REPLACE VIEW outbox.oldest_pending AS
SELECT d.channel,
       min(d.next_attempt_at)               AS oldest_due_at,
       now() - min(d.next_attempt_at)       AS age,
       count(*)                             AS due
FROM outbox.deliveries d
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
GROUP BY d.channel;
COMMENT ON VIEW outbox.oldest_pending IS 'Per channel: age of the oldest due pending delivery (how far behind the workers are).';

-- The dead-letter queue, newest first, with the reason.
CREATE OR REPLACE VIEW outbox.dead_letters AS
SELECT d.id            AS delivery_id,
       n.message_id,
       d.channel,
       d.destination,
       d.provider,
       d.attempts,
       d.last_error    AS reason,
       n.template_key,
       n.category,
       d.finished_at   AS died_at,
       n.created_at    AS enqueued_at
FROM outbox.deliveries d
JOIN outbox.notifications n ON n.id = d.notification_id
WHERE d.status = 'dead'
ORDER BY d.finished_at DESC;
COMMENT ON VIEW outbox.dead_letters IS 'Dead deliveries (the DLQ) with their reason. Requeue with `outbox dlq requeue`.';

-- Every event of a notification and its deliveries, in order.
CREATE OR REPLACE VIEW outbox.message_timeline AS
SELECT n.message_id,
       e.created_at AS at,
       e.kind,
       e.delivery_id,
       d.channel,
       d.destination,
       e.attempt,
       e.worker,
       e.detail
FROM outbox.notifications n
JOIN outbox.events e ON e.notification_id = n.id
LEFT JOIN outbox.deliveries d ON d.id = e.delivery_id
ORDER BY n.message_id, e.created_at, e.id;
COMMENT ON VIEW outbox.message_timeline IS 'Per message id: every transition of every delivery. Filter on message_id.';

-- Outcomes per hour, channel and provider (reads the events of the period asked for;
-- filter on hour to keep it cheap).
CREATE OR REPLACE VIEW outbox.delivery_stats_hourly AS
SELECT date_trunc('hour', e.created_at) AS hour,
       d.channel,
       d.provider,
       count(*) FILTER (WHERE e.kind = 'sent')       AS sent,
       count(*) FILTER (WHERE e.kind = 'delivered')  AS delivered,
       count(*) FILTER (WHERE e.kind = 'retry')      AS retried,
       count(*) FILTER (WHERE e.kind = 'dead')       AS dead,
       count(*) FILTER (WHERE e.kind = 'expired')    AS expired,
       count(*) FILTER (WHERE e.kind = 'suppressed') AS suppressed
FROM outbox.events e
JOIN outbox.deliveries d ON d.id = e.delivery_id
GROUP BY 1, 2, 3;
COMMENT ON VIEW outbox.delivery_stats_hourly IS 'Outcomes per hour, channel and provider. Filter on hour.';
