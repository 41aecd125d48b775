-- Revision 0013: outbox.cancel_detailed's work moved into outbox.cancel_notifications,
-- which outbox.cancel_broadcast shares (sql/functions/registry.sql at 0013).

-- outbox.cancel_notifications: what outbox.cancel_detailed does (below), for
-- every notification in `notification_ids` at once (outbox.cancel_broadcast
-- cancels a whole broadcast with it); the counts are summed. One NOTIFY
-- outbox_cancel per notification with a delivery in flight.
CREATE OR REPLACE FUNCTION outbox.cancel_notifications(notification_ids bigint[], reason text)
RETURNS TABLE (cancelled integer, in_flight integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_reason CONSTANT text := coalesce(reason, 'cancelled');
    v_woken  bigint[];
BEGIN
    WITH target AS (
        SELECT d.id
        FROM outbox.deliveries d
        WHERE d.notification_id = ANY (notification_ids)
          AND (d.status = 'pending' OR (d.status = 'processing' AND d.cancel_requested_at IS NULL))
        ORDER BY d.id
        FOR UPDATE
    ), changed AS (
        -- As the row is once its lock is ours (target re-checked it then): pending
        -- is cancelled, processing gets the request.
        UPDATE outbox.deliveries d
        SET status              = CASE WHEN d.status = 'pending' THEN 'cancelled' ELSE d.status END,
            last_error          = CASE WHEN d.status = 'pending' THEN v_reason ELSE d.last_error END,
            finished_at         = CASE WHEN d.status = 'pending' THEN now() ELSE d.finished_at END,
            cancel_requested_at = CASE WHEN d.status = 'processing' THEN now() END,
            cancel_reason       = CASE WHEN d.status = 'processing' THEN v_reason END,
            updated_at          = now()
        FROM target t
        WHERE d.id = t.id
        RETURNING d.id, d.notification_id, d.attempts, d.status
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
        SELECT c.notification_id, c.id,
               CASE c.status WHEN 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
               c.attempts, jsonb_build_object('reason', reason)
        FROM changed c
        RETURNING notification_id, kind
    )
    SELECT count(*) FILTER (WHERE l.kind = 'cancelled'), count(*) FILTER (WHERE l.kind = 'cancel_requested'),
           coalesce(array_agg(DISTINCT l.notification_id) FILTER (WHERE l.kind = 'cancel_requested'), '{}')
    INTO cancelled, in_flight, v_woken
    FROM logged l;
    PERFORM pg_notify('outbox_cancel', w::text) FROM unnest(v_woken) w;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION outbox.cancel_notifications(bigint[], text) IS
    'Cancel the unsent deliveries of the given notifications: (cancelled now, in_flight), summed (helper of cancel_detailed and cancel_broadcast).';


-- outbox.cancel_detailed: cancel every delivery of a notification that has not
-- been sent, and say what that did: (cancelled, in_flight).
--
-- cancelled  pending deliveries cancelled now: they are never sent.
-- in_flight  deliveries a worker holds right now (processing): their attempt
--            may be at the provider already and cannot be called back, so the
--            cancel is remembered (cancel_requested_at, cancel_reason, and a
--            cancel_requested event). When that attempt's result is recorded, a
--            success stays sent (the provider had it; its sent event says the
--            cancel came too late) and anything else -- a retry, a deferral, a
--            failure -- ends cancelled, never pending: no later attempt is made.
--            Lease recovery and a worker's shutdown end them cancelled too.
--            On commit, NOTIFY outbox_cancel (the notification id) tells the
--            workers, so one that has not started the provider call yet does
--            not start it.
-- Deliveries already finished, or whose cancel was already requested, are not
-- counted again. One UPDATE for both kinds, locking the rows in id order (the
-- order the worker records results in): a result recorded while this waits for
-- its row is seen, so a delivery that went back to pending meanwhile is
-- cancelled, not missed. The row locks last until the caller's transaction ends,
-- and a worker recording the result of one of these waits for that.
CREATE OR REPLACE FUNCTION outbox.cancel_detailed(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS TABLE (cancelled integer, in_flight integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_notification_id bigint;
BEGIN
    SELECT n.id INTO v_notification_id FROM outbox.notifications n WHERE n.message_id = cancel_detailed.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.cancel: no notification with message_id %', coalesce(quote_literal(message_id), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'message_id';
    END IF;
    RETURN QUERY SELECT c.cancelled, c.in_flight FROM outbox.cancel_notifications(ARRAY[v_notification_id], reason) c;
END
$$;
COMMENT ON FUNCTION outbox.cancel_detailed(text, text) IS
    'Cancel a notification''s unsent deliveries: (cancelled now, in_flight: an attempt may be at the provider, and it is never retried).';
