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
  AND (%(provider)s::text IS NULL OR d.provider = %(provider)s::text)
  AND (%(reason)s::text IS NULL OR d.last_error ILIKE '%%' || %(reason)s::text || '%%')
  AND (%(since)s::timestamptz IS NULL OR d.finished_at >= %(since)s::timestamptz)
  AND (%(before)s::timestamptz IS NULL OR d.finished_at < %(before)s::timestamptz)
ORDER BY d.finished_at DESC, d.id DESC
LIMIT %(limit)s;

-- name: dlq_requeue
-- Give dead deliveries a fresh start: pending now, attempts reset. The event
-- records who did it (worker = the actor) and the error it had; %(detail)s adds
-- what the caller knows of the actor (the console: operator and address).
-- Never one the application cancelled (its cancel was requested while it was
-- in flight, and it then died, e.g. by a bounce after it was sent): cancelled
-- means never sent again.
-- Nor one of an erased recipient (outbox.erase_recipient: destination
-- 'erased:<id>'): there is no one to send it to.
WITH target AS (
    SELECT d.id
    FROM outbox.deliveries d
    JOIN outbox.notifications n ON n.id = d.notification_id
    WHERE d.status = 'dead'
      AND d.cancel_requested_at IS NULL
      AND d.destination NOT LIKE 'erased:%%'
      AND (%(ids)s::bigint[] IS NULL OR d.id = ANY (%(ids)s::bigint[]))
      AND (%(message_ids)s::text[] IS NULL OR n.message_id = ANY (%(message_ids)s::text[]))
      AND (%(channel)s::text IS NULL OR d.channel::text = %(channel)s::text)
      AND (%(provider)s::text IS NULL OR d.provider = %(provider)s::text)
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
    SELECT r.notification_id, r.id, 'requeued', 0, %(actor)s, jsonb_build_object('previous_error', r.last_error) || coalesce(%(detail)s::jsonb, '{}')
    FROM requeued r
)
SELECT count(*) AS requeued, pg_notify('outbox_work', '') IS NULL AS notified FROM requeued;

-- name: dlq_purge
-- Delete matching dead deliveries and their events, through outbox.purge_dead
-- (sql/retention.sql: no outbox role deletes history directly), which leaves one
-- 'cancelled' event per purged delivery with detail.purged and who did it.
SELECT outbox.purge_dead(
    p_ids => %(ids)s::bigint[], p_message_ids => %(message_ids)s::text[],
    p_channel => %(channel)s::text, p_provider => %(provider)s::text, p_reason => %(reason)s::text,
    p_since => %(since)s::timestamptz, p_before => %(before)s::timestamptz,
    p_actor => %(actor)s::text, p_detail => %(detail)s::jsonb) AS purged;
