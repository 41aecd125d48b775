-- Queries of `outbox demo`: its live progress and its closing summary.

-- name: demo_progress
-- Deliveries by channel and status, right now.
SELECT d.channel::text AS channel, d.status::text AS status, count(*) AS n
FROM outbox.deliveries d
GROUP BY 1, 2;

-- name: demo_outcomes
-- Per channel and provider: how each delivery ended, and how many retries it took.
SELECT d.channel::text AS channel,
       coalesce(d.provider, '-') AS provider,
       count(*) FILTER (WHERE d.status = 'sent')       AS sent,
       count(*) FILTER (WHERE d.status = 'delivered')  AS delivered,
       count(*) FILTER (WHERE d.status = 'dead')       AS dead,
       count(*) FILTER (WHERE d.status = 'expired')    AS expired,
       count(*) FILTER (WHERE d.status = 'suppressed') AS suppressed,
       count(*) FILTER (WHERE d.status = 'cancelled')  AS cancelled,
       count(*) FILTER (WHERE d.status IN ('pending', 'processing')) AS unfinished,
       coalesce(sum(r.retries), 0)                     AS retried
FROM outbox.deliveries d
LEFT JOIN LATERAL (
    SELECT count(*) AS retries FROM outbox.events e
    WHERE e.notification_id = d.notification_id AND e.delivery_id = d.id AND e.kind = 'retry'
) r ON true
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: demo_dead_reasons
-- Why the dead ones died, most common first.
SELECT d.channel::text AS channel, d.last_error AS reason, count(*) AS n
FROM outbox.deliveries d
WHERE d.status = 'dead'
GROUP BY 1, 2
ORDER BY 3 DESC, 1
LIMIT 10;

-- name: demo_latency
-- Milliseconds from when a delivery was due (enqueue, or its send_at) to the
-- provider's acceptance, per channel: p50 and p99.
SELECT d.channel::text AS channel,
       count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.sent_at - greatest(d.created_at, n.send_at)) * 1000) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.sent_at - greatest(d.created_at, n.send_at)) * 1000) AS p99_ms
FROM outbox.deliveries d
JOIN outbox.notifications n ON n.id = d.notification_id
WHERE d.sent_at IS NOT NULL
GROUP BY 1
ORDER BY 1;

-- name: demo_deactivated_devices
-- Push tokens a provider reported dead during the run.
SELECT r.external_id AS recipient, dv.platform, dv.token, dv.deactivated_reason AS reason
FROM outbox.devices dv
JOIN outbox.recipients r ON r.id = dv.recipient_id
WHERE NOT dv.active
ORDER BY dv.deactivated_at;

-- name: demo_suppressed_addresses
-- Addresses and numbers that will not be sent to again.
SELECT s.channel::text AS channel, s.destination, s.reason FROM outbox.suppressions s ORDER BY s.created_at;
