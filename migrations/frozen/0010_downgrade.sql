-- Revision 0010, downgrade: cancels of deliveries in flight are no longer remembered.
--
-- What the older schema cannot hold goes: the cancel_requested events, and the
-- two columns. A delivery still in flight whose cancel was requested is then an
-- ordinary processing one: if its attempt fails transiently, it is retried.

-- 0001's cancel (pending deliveries only), then the function it no longer calls.
-- outbox.cancel: cancel every not-yet-sent delivery of a notification. Returns
-- how many were cancelled (0 if all were already sent or finished). A delivery a
-- worker holds right now (processing) is not touched: it may already be at the
-- provider.
CREATE OR REPLACE FUNCTION outbox.cancel(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS integer
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_notification_id bigint;
    v_count integer;
BEGIN
    SELECT n.id INTO v_notification_id FROM outbox.notifications n WHERE n.message_id = cancel.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.cancel: no notification with message_id %', coalesce(quote_literal(message_id), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'message_id';
    END IF;
    WITH cancelled AS (
        UPDATE outbox.deliveries d
        SET status = 'cancelled', last_error = coalesce(reason, 'cancelled'), finished_at = now(), updated_at = now()
        WHERE d.notification_id = v_notification_id AND d.status = 'pending'
        RETURNING d.id, d.attempts
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, detail)
        SELECT v_notification_id, c.id, 'cancelled', c.attempts, jsonb_build_object('reason', reason)
        FROM cancelled c
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM logged;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION outbox.cancel(text, text) IS 'Cancel the pending deliveries of a notification; returns how many.';
DROP FUNCTION outbox.cancel_detailed(text, text);
DO $cancel_roles$
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader')) = 3 THEN
        ALTER FUNCTION outbox.cancel(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
    END IF;
END
$cancel_roles$;

DELETE FROM outbox.events WHERE kind = 'cancel_requested';
ALTER TABLE outbox.events
    DROP CONSTRAINT events_kind_check,
    ADD CONSTRAINT events_kind_check CHECK (kind IN (
                         'created', 'processing', 'sent', 'delivered', 'retry', 'dead',
                         'expired', 'cancelled', 'suppressed', 'released', 'recovered',
                         'deferred', 'requeued', 'receipt', 'device_deactivated',
                         'template_activated'));
COMMENT ON COLUMN outbox.events.kind IS 'created, processing, sent, delivered, retry, dead, expired, cancelled, suppressed, released, recovered, deferred, requeued, receipt, ...';

ALTER TABLE outbox.deliveries
    DROP CONSTRAINT deliveries_cancel_requested_not_pending,
    DROP CONSTRAINT deliveries_cancel_requested_has_reason,
    DROP COLUMN cancel_requested_at,
    DROP COLUMN cancel_reason;
