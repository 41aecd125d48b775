-- SQL of benchmarks/providers.py, run only in that benchmark's own database.

-- name: providers_clock
-- The database clock now (not the transaction's start), as epoch seconds.
SELECT extract(epoch FROM clock_timestamp())::float8 AS t0;

-- name: providers_result
-- One run's deliveries (by message-id prefix): sent or not, when the last one
-- was sent, and how many needed more than one attempt.
SELECT count(*) FILTER (WHERE d.status = 'sent') AS sent,
       count(*) FILTER (WHERE d.status <> 'sent') AS not_sent,
       extract(epoch FROM max(d.sent_at))::float8 AS last_sent,
       count(*) FILTER (WHERE d.attempts > 1) AS retried
FROM outbox.deliveries d
JOIN outbox.notifications n ON n.id = d.notification_id
WHERE starts_with(n.message_id, %(prefix)s);

-- name: providers_retry_reasons
-- The commonest reasons of one run's retries (none expected: no faults are injected).
SELECT e.detail->>'outcome' AS outcome, e.detail->>'error' AS error, count(*) AS n
FROM outbox.events e
JOIN outbox.notifications n ON n.id = e.notification_id
WHERE starts_with(n.message_id, %(prefix)s) AND e.kind = 'retry'
GROUP BY 1, 2
ORDER BY 3 DESC
LIMIT 3;
