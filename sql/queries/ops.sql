-- Operations: `outbox status`, `outbox inspect`, and retention (`outbox prune`
-- and the workers' periodic prune). Library: outbox/ops.py.

-- name: status_queue
-- Unfinished deliveries by channel and status: due now (or in flight) vs
-- scheduled for later. Reads only the partial indexes of unfinished rows.
SELECT q.channel::text AS channel, q.status::text AS status, q.due, q.scheduled, q.total
FROM outbox.queue_depth q
ORDER BY q.channel, q.status;

-- name: status_oldest
-- Per channel: the oldest due pending delivery and how long it has waited.
SELECT o.channel::text AS channel, o.oldest_due_at, extract(epoch FROM o.age)::float8 AS age_seconds, o.due
FROM outbox.oldest_pending o
ORDER BY o.channel;

-- name: status_dead
-- The dead-letter queue per channel: how many, and when the newest died.
-- Reads the deliveries_dead partial index only.
SELECT d.channel::text AS channel, count(*) AS dead, max(d.finished_at) AS newest
FROM outbox.deliveries d
WHERE d.status = 'dead'
GROUP BY d.channel
ORDER BY d.channel;

-- name: status_breaker_table
-- Whether the circuit breaker's state table is installed (it is optional: older
-- schemas do not have it).
SELECT to_regclass('outbox.provider_breakers') IS NOT NULL AS present;

-- name: status_breakers
-- Every provider's breaker row, whatever columns the breaker keeps.
SELECT * FROM outbox.provider_breakers ORDER BY 1;

-- name: inspect_notification
-- One notification by message id, with its recipient's own id.
SELECT n.id, n.message_id, r.external_id AS recipient, n.address, n.template_key, n.category,
       n.priority, n.channels::text[] AS channels, n.data, n.send_at, n.expires_at, n.created_at
FROM outbox.notifications n
LEFT JOIN outbox.recipients r ON r.id = n.recipient_id
WHERE n.message_id = %(message_id)s;

-- name: inspect_deliveries
-- Every delivery of a notification.
SELECT d.id, d.channel::text AS channel, d.destination, d.status::text AS status, d.attempts,
       d.max_attempts, d.in_doubt, d.provider, d.provider_message_id, d.next_attempt_at,
       d.lease_owner, d.last_error, d.created_at, d.sent_at, d.delivered_at, d.finished_at
FROM outbox.deliveries d
WHERE d.notification_id = %(notification_id)s
ORDER BY d.id;

-- name: inspect_timeline
-- Every event of a notification and its deliveries, in order.
SELECT e.id, e.created_at AS at, e.kind, e.delivery_id, e.attempt, e.worker, e.detail
FROM outbox.events e
WHERE e.notification_id = %(notification_id)s
ORDER BY e.created_at, e.id;

-- name: prune_try_lock
-- Retention runs one at a time per database: whoever holds this session-level
-- advisory lock prunes; the others skip their turn. Released by prune_unlock,
-- or when the connection closes.
SELECT pg_try_advisory_lock(hashtextextended('outbox.prune', 0)) AS locked;

-- name: prune_unlock
SELECT pg_advisory_unlock(hashtextextended('outbox.prune', 0)) AS unlocked;

-- name: prune_cutoff
-- The retention cutoff in database time, so every worker agrees on it.
SELECT now() - %(older_than_seconds)s * interval '1 second' AS cutoff;

-- name: prune_deliveries
-- One batch of finished deliveries older than the cutoff, with their events, in
-- the id range after %(after_id)s (outbox.prune_deliveries, sql/retention.sql:
-- no outbox role may delete history but through it). Returns how far the window
-- reached and its oldest created_at, what went, and the notifications touched.
SELECT r.last_id, r.oldest_created_at, r.deliveries, r.events, r.notification_ids
FROM outbox.prune_deliveries(%(after_id)s::bigint, %(cutoff)s::timestamptz, %(batch_size)s::integer) r;

-- name: prune_notifications
-- The notifications given (whose deliveries a batch just removed) that have no
-- delivery left go, with their remaining events (outbox.prune_notifications).
SELECT r.notifications, r.events FROM outbox.prune_notifications(%(ids)s::bigint[]) r;

-- name: prune_orphan_notifications
-- One batch over notifications by id range: those created before the cutoff
-- with no delivery at all (left behind by `outbox dlq purge`, for instance) go,
-- with their events (outbox.prune_orphan_notifications).
SELECT r.last_id, r.oldest_created_at, r.notifications, r.events
FROM outbox.prune_orphan_notifications(%(after_id)s::bigint, %(cutoff)s::timestamptz, %(batch_size)s::integer) r;

-- name: prune_standalone_events
-- One batch over events by id range: events that belong to no notification
-- (device deactivations, template activations) older than the cutoff go
-- (outbox.prune_standalone_events). Events of kept notifications stay with them.
SELECT r.last_id, r.oldest_created_at, r.events
FROM outbox.prune_standalone_events(%(after_id)s::bigint, %(cutoff)s::timestamptz, %(batch_size)s::integer) r;
