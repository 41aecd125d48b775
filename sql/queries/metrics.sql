-- The metrics' queries: run on an interval by each worker's housekeeping, never
-- per delivery.

-- name: queue_gauges
-- Unfinished deliveries per channel and status: how many, how many are due now,
-- and the age in seconds of the oldest due pending one (NULL when none is due).
-- One branch per status, so each reads only its partial index (deliveries_due,
-- deliveries_leases) and the cost follows the queue, not the history kept.
SELECT d.channel::text AS channel, 'pending' AS status, count(*) AS total,
       count(*) FILTER (WHERE d.next_attempt_at <= now()) AS due,
       extract(epoch FROM now() - min(d.next_attempt_at) FILTER (WHERE d.next_attempt_at <= now()))::float8
           AS oldest_due_age_seconds
FROM outbox.deliveries d
WHERE d.status = 'pending'
GROUP BY d.channel
UNION ALL
SELECT d.channel::text, 'processing', count(*), count(*), NULL::float8
FROM outbox.deliveries d
WHERE d.status = 'processing'
GROUP BY d.channel;
