-- Revision 0010: a cancel that arrives while a delivery is in flight is remembered
-- (issue 12, finding F1). Only what this revision changes; the live files are
-- sql/schema.sql (the columns, constraints and comments), sql/functions/registry.sql
-- (cancel_detailed, cancel) and sql/roles.sql (cancel_detailed is a producer
-- function). The worker's queries (sql/queries/worker.sql) are not migrated.

-- The request, on the delivery: when, and the reason the application gave.
-- Both nullable with no default, so adding them rewrites nothing.
ALTER TABLE outbox.deliveries
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN cancel_reason text,
    ADD CONSTRAINT deliveries_cancel_requested_not_pending
        CHECK (status <> 'pending' OR cancel_requested_at IS NULL),
    ADD CONSTRAINT deliveries_cancel_requested_has_reason
        CHECK ((cancel_requested_at IS NULL) = (cancel_reason IS NULL));
COMMENT ON COLUMN outbox.deliveries.cancel_requested_at IS 'When outbox.cancel was called while it was in flight (processing): its attempt may reach the provider, but it is never retried.';
COMMENT ON COLUMN outbox.deliveries.cancel_reason IS 'The reason given to that outbox.cancel; it becomes last_error if the attempt in flight does not succeed.';

-- A new event kind, cancel_requested: every existing kind, and it.
ALTER TABLE outbox.events
    DROP CONSTRAINT events_kind_check,
    ADD CONSTRAINT events_kind_check CHECK (kind IN (
                         'created', 'processing', 'sent', 'delivered', 'retry', 'dead',
                         'expired', 'cancelled', 'suppressed', 'released', 'recovered',
                         'deferred', 'requeued', 'receipt', 'device_deactivated',
                         'template_activated', 'cancel_requested'));
COMMENT ON COLUMN outbox.events.kind IS 'created, processing, sent, delivered, retry, dead, expired, cancelled, cancel_requested, suppressed, released, recovered, deferred, requeued, receipt, ...';

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


-- outbox.cancel: outbox.cancel_detailed's two counts added up: how many
-- deliveries the cancel took hold of. Those cancelled now are never sent; an
-- attempt in flight may still reach the provider, but none is made after it.
-- 0 if every delivery was already sent or finished.
CREATE OR REPLACE FUNCTION outbox.cancel(message_id text, reason text DEFAULT 'cancelled by the application')
RETURNS integer
LANGUAGE sql
AS $$
    SELECT c.cancelled + c.in_flight FROM outbox.cancel_detailed(message_id, reason) c;
$$;
COMMENT ON FUNCTION outbox.cancel(text, text) IS
    'Cancel a notification''s unsent deliveries; how many: pending ones cancelled now plus those in flight, whose attempt may reach the provider but is never retried.';

-- As sql/roles.sql does for every producer function, once the three roles exist:
-- CREATE OR REPLACE reset cancel to SECURITY INVOKER, and cancel_detailed is new.
DO $cancel_roles$
DECLARE
    f regprocedure;
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader')) < 3 THEN
        RETURN;  -- installed without the roles (sql/roles.sql says why)
    END IF;
    FOREACH f IN ARRAY ARRAY['outbox.cancel(text, text)'::regprocedure,
                             'outbox.cancel_detailed(text, text)'::regprocedure] LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_producer', f);
    END LOOP;
END
$cancel_roles$;
