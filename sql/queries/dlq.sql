-- The dead-letter queue: dead deliveries, listed, requeued, purged.
-- Filters are optional: a NULL parameter does not filter.

-- name: dlq_list
-- Dead deliveries, newest first.
SELECT d.id AS delivery_id, n.message_id, d.channel::text AS channel, d.destination, d.provider,
       d.attempts, d.last_error AS reason, d.finished_at AS died_at
FROM outbox.deliveries d
JOIN outbox.notifications n ON n.id = d.notification_id
WHERE d.status = 'dead'
  AND (%(ids)s::bigint[] IS NULL OR d.id = ANY (%(ids)s::bigint[]))
  AND (%(message_ids)s::text[] IS NULL OR n.message_id = ANY (%(message_ids)s::text[]))
  AND (%(channel)s::text IS NULL OR d.channel::text = %(channel)s::text)
  AND (%(reason)s::text IS NULL OR d.last_error ILIKE '%%' || %(reason)s::text || '%%')
  AND (%(since)s::timestamptz IS NULL OR d.finished_at >= %(since)s::timestamptz)
  AND (%(before)s::timestamptz IS NULL OR d.finished_at < %(before)s::timestamptz)
ORDER BY d.finished_at DESC, d.id DESC
LIMIT %(limit)s;

-- name: dlq_requeue
-- Give dead deliveries a fresh start: pending now, attempts reset. The event
-- records who did it and the error it had. Deliveries of an erased recipient
-- (outbox.erase_recipient: destination 'erased:<id>') have no one to go to.
WITH target AS (
    SELECT d.id
    FROM outbox.deliveries d
    JOIN outbox.notifications n ON n.id = d.notification_id
    WHERE d.status = 'dead' AND d.destination NOT LIKE 'erased:%%'
      AND (%(ids)s::bigint[] IS NULL OR d.id = ANY (%(ids)s::bigint[]))
      AND (%(message_ids)s::text[] IS NULL OR n.message_id = ANY (%(message_ids)s::text[]))
      AND (%(channel)s::text IS NULL OR d.channel::text = %(channel)s::text)
      AND (%(reason)s::text IS NULL OR d.last_error ILIKE '%%' || %(reason)s::text || '%%')
      AND (%(since)s::timestamptz IS NULL OR d.finished_at >= %(since)s::timestamptz)
      AND (%(before)s::timestamptz IS NULL OR d.finished_at < %(before)s::timestamptz)
    FOR UPDATE OF d
), requeued AS (
    UPDATE outbox.deliveries d
    SET status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL, updated_at = now()
    FROM target t
    WHERE d.id = t.id
    RETURNING d.id, d.notification_id, d.last_error
), logged AS (
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
    SELECT r.notification_id, r.id, 'requeued', 0, %(actor)s, jsonb_build_object('previous_error', r.last_error)
    FROM requeued r
)
SELECT count(*) AS requeued, pg_notify('outbox_work', '') IS NULL AS notified FROM requeued;

-- name: dlq_purge
-- Delete dead deliveries (and their events) that died before the cutoff.
WITH gone AS (
    DELETE FROM outbox.deliveries d
    WHERE d.status = 'dead' AND d.finished_at < %(before)s::timestamptz
    RETURNING d.id
), events_gone AS (
    DELETE FROM outbox.events e USING gone g WHERE e.delivery_id = g.id
)
SELECT count(*) AS purged FROM gone;
