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
-- One batch: look at the next %(batch_size)s deliveries after id %(after_id)s
-- (a primary-key range, so a whole run reads the old part of the table once)
-- and delete those that finished before the cutoff, with their events. Rows
-- someone holds locked (a receipt being recorded) are skipped, never waited for;
-- unfinished rows are neither deleted nor locked, so claims never wait on a prune.
-- Returns how far the window reached and its oldest created_at: once that is
-- past the cutoff, nothing further can have finished before it.
WITH win AS (
    SELECT d.id, d.created_at
    FROM outbox.deliveries d
    WHERE d.id > %(after_id)s
    ORDER BY d.id
    LIMIT %(batch_size)s
), doomed AS (
    SELECT d.id
    FROM outbox.deliveries d
    WHERE d.id IN (SELECT w.id FROM win w)
      AND d.status IN ('sent', 'delivered', 'dead', 'expired', 'cancelled', 'suppressed')
      AND d.finished_at < %(cutoff)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM outbox.deliveries d
    USING doomed x
    WHERE d.id = x.id
    RETURNING d.id, d.notification_id
), events_gone AS (
    -- By notification id first: that is the indexed column of events.
    DELETE FROM outbox.events e
    USING gone g
    WHERE e.notification_id = g.notification_id AND e.delivery_id = g.id
    RETURNING 1
)
SELECT (SELECT max(w.id) FROM win w) AS last_id,
       (SELECT min(w.created_at) FROM win w) AS oldest_created_at,
       (SELECT count(*) FROM gone) AS deliveries,
       (SELECT count(*) FROM events_gone) AS events,
       (SELECT coalesce(array_agg(DISTINCT g.notification_id), '{}') FROM gone g) AS notification_ids;

-- name: prune_notifications
-- The notifications given (whose deliveries a batch just removed) that have no
-- delivery left: delete them and their remaining (notification-level) events.
-- No row lock is taken first: only enqueue adds deliveries, and only to the
-- notification it just created, so nothing can revive one between the check and
-- the delete (and the worker role needs no UPDATE right on notifications).
WITH doomed AS (
    SELECT n.id
    FROM outbox.notifications n
    WHERE n.id = ANY (%(ids)s::bigint[])
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.notification_id = n.id)
), gone AS (
    DELETE FROM outbox.notifications n USING doomed x WHERE n.id = x.id RETURNING n.id
), events_gone AS (
    DELETE FROM outbox.events e USING gone g WHERE e.notification_id = g.id RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS notifications, (SELECT count(*) FROM events_gone) AS events;

-- name: prune_orphan_notifications
-- One batch over notifications by id range: those created before the cutoff
-- with no delivery at all (left behind by `outbox dlq purge`, for instance) go,
-- with their events.
WITH win AS (
    SELECT n.id, n.created_at
    FROM outbox.notifications n
    WHERE n.id > %(after_id)s
    ORDER BY n.id
    LIMIT %(batch_size)s
), doomed AS (
    SELECT n.id
    FROM outbox.notifications n
    WHERE n.id IN (SELECT w.id FROM win w)
      AND n.created_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.notification_id = n.id)
), gone AS (
    DELETE FROM outbox.notifications n USING doomed x WHERE n.id = x.id RETURNING n.id
), events_gone AS (
    DELETE FROM outbox.events e USING gone g WHERE e.notification_id = g.id RETURNING 1
)
SELECT (SELECT max(w.id) FROM win w) AS last_id,
       (SELECT min(w.created_at) FROM win w) AS oldest_created_at,
       (SELECT count(*) FROM gone) AS notifications,
       (SELECT count(*) FROM events_gone) AS events;

-- name: prune_standalone_events
-- One batch over events by id range: events that belong to no notification
-- (device deactivations, template activations) older than the cutoff go.
-- Events of kept notifications stay with them, however old.
WITH win AS (
    SELECT e.id, e.created_at, e.notification_id
    FROM outbox.events e
    WHERE e.id > %(after_id)s
    ORDER BY e.id
    LIMIT %(batch_size)s
), gone AS (
    DELETE FROM outbox.events e
    USING win w
    WHERE e.id = w.id AND w.notification_id IS NULL AND w.created_at < %(cutoff)s
    RETURNING 1
)
SELECT (SELECT max(w.id) FROM win w) AS last_id,
       (SELECT min(w.created_at) FROM win w) AS oldest_created_at,
       (SELECT count(*) FROM gone) AS events;
