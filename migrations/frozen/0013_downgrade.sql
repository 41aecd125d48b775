-- Revision 0013, downgrade: no topics, subscriptions or broadcasts, and
-- outbox.cancel_detailed as 0010 wrote it (a copy of frozen/0010_cancel_requests.sql's:
-- rerunning that file would also redo 0010's ALTER TABLEs).
--
-- The notifications broadcasts enqueued stay, as ordinary notifications (their
-- message ids '<broadcast>/<recipient id>' keep them idempotent); only the link
-- to their broadcast goes. Subscriptions and topics are lost: no earlier
-- revision can hold them.
DROP FUNCTION outbox.cancel_broadcast(text, text);
DROP FUNCTION outbox.broadcast_segment(text, text, text, jsonb, text[], text, integer, timestamptz, timestamptz, text, integer);
DROP FUNCTION outbox.broadcast_list(text, text[], text, jsonb, text[], text, integer, timestamptz, timestamptz);
DROP FUNCTION outbox.broadcast(text, text, text, jsonb, text[], text, integer, timestamptz, timestamptz, bigint, integer);
DROP FUNCTION outbox.broadcast_insert(text, outbox.broadcasts, bigint[]);
DROP FUNCTION outbox.broadcast_open(text, text, bigint, text, jsonb, text[], text, integer, timestamptz, timestamptz);
DROP FUNCTION outbox.unsubscribe(text, text);
DROP FUNCTION outbox.subscribe(text, text);
DROP FUNCTION outbox.subscription_target(text, text, text);
DROP FUNCTION outbox.create_topic(text, text);
ALTER TABLE outbox.notifications DROP COLUMN broadcast_id;
DROP TABLE outbox.broadcasts;
DROP TABLE outbox.subscriptions;
DROP TABLE outbox.topics;

CREATE OR REPLACE FUNCTION outbox.cancel_detailed(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS TABLE (cancelled integer, in_flight integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_notification_id bigint;
    v_reason CONSTANT text := coalesce(reason, 'cancelled');
BEGIN
    SELECT n.id INTO v_notification_id FROM outbox.notifications n WHERE n.message_id = cancel_detailed.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.cancel: no notification with message_id %', coalesce(quote_literal(message_id), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'message_id';
    END IF;
    WITH target AS (
        SELECT d.id
        FROM outbox.deliveries d
        WHERE d.notification_id = v_notification_id
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
        RETURNING d.id, d.attempts, d.status
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
        SELECT v_notification_id, c.id,
               CASE c.status WHEN 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
               c.attempts, jsonb_build_object('reason', reason)
        FROM changed c
        RETURNING kind
    )
    SELECT count(*) FILTER (WHERE l.kind = 'cancelled'), count(*) FILTER (WHERE l.kind = 'cancel_requested')
    INTO cancelled, in_flight
    FROM logged l;
    IF in_flight > 0 THEN
        PERFORM pg_notify('outbox_cancel', v_notification_id::text);
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION outbox.cancel_detailed(text, text) IS
    'Cancel a notification''s unsent deliveries: (cancelled now, in_flight: an attempt may be at the provider, and it is never retried).';


DROP FUNCTION outbox.cancel_notifications(bigint[], text);
