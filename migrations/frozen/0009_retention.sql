-- Retention: the only way history is deleted. Installed by migration 0009
-- (migrations/versions/0009_least_privilege.py).
--
-- The events table is the audit trail; no outbox role may DELETE from events,
-- notifications or deliveries (sql/roles.sql). What retention removes (`outbox
-- prune` and the workers' periodic prune, outbox/ops.py; `outbox dlq purge`,
-- outbox/dlq.py) goes through these functions instead. They run as their owner
-- (SECURITY DEFINER) with search_path pinned, so a caller cannot slip its own
-- objects into them; EXECUTE is revoked from PUBLIC and granted to outbox_worker.
-- What they can delete is fixed here: finished deliveries older than a cutoff
-- with their whole history, notifications left with no delivery, events of no
-- notification, dead deliveries. Never an unfinished row, never one event of a
-- history that is kept.
--
-- events_no_delete refuses every other DELETE on events, the owner's by hand
-- included: it lets through only a statement run inside these functions (each
-- sets outbox.retention for its own duration) by a member of the table's owner.
-- TRUNCATE is a privilege no outbox role has; UPDATE is refused by
-- events_append_only (sql/schema.sql).
--
-- Each function is one batch of the matching query in sql/queries/ops.sql,
-- which calls it: the batching, the cutoff and the advisory lock stay there.

CREATE FUNCTION outbox.forbid_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('outbox.retention', true) = 'on'
       AND pg_has_role(current_user, (SELECT c.relowner FROM pg_catalog.pg_class c
                                      WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'outbox.% is append-only: history is deleted only by the retention '
                    'functions (outbox.prune_*, outbox.purge_dead)', TG_TABLE_NAME
        USING ERRCODE = 'OB005';
END $$;
COMMENT ON FUNCTION outbox.forbid_delete() IS
    'Trigger: refuses a DELETE that does not run inside the retention functions (sql/retention.sql).';

CREATE TRIGGER events_no_delete BEFORE DELETE ON outbox.events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.forbid_delete();

-- One batch: the next p_batch_size deliveries after id p_after_id (a primary-key
-- range, so a whole run reads the old part of the table once); those that
-- finished before p_cutoff go, with their events. Rows someone holds locked (a
-- receipt being recorded) are skipped, never waited for; unfinished rows are
-- neither deleted nor locked, so claims never wait on a prune. Returns how far
-- the window reached and its oldest created_at: once that is past the cutoff,
-- nothing further can have finished before it.
CREATE FUNCTION outbox.prune_deliveries(p_after_id bigint, p_cutoff timestamptz, p_batch_size integer)
RETURNS TABLE (last_id bigint, oldest_created_at timestamptz, deliveries bigint, events bigint,
               notification_ids bigint[])
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET outbox.retention = 'on'
AS $$
WITH win AS (
    SELECT d.id, d.created_at
    FROM outbox.deliveries d
    WHERE d.id > p_after_id
    ORDER BY d.id
    LIMIT p_batch_size
), doomed AS (
    SELECT d.id
    FROM outbox.deliveries d
    WHERE d.id IN (SELECT w.id FROM win w)
      AND d.status IN ('sent', 'delivered', 'dead', 'expired', 'cancelled', 'suppressed')
      AND d.finished_at < p_cutoff
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
SELECT (SELECT max(w.id) FROM win w),
       (SELECT min(w.created_at) FROM win w),
       (SELECT count(*) FROM gone),
       (SELECT count(*) FROM events_gone),
       (SELECT coalesce(array_agg(DISTINCT g.notification_id), '{}') FROM gone g);
$$;
COMMENT ON FUNCTION outbox.prune_deliveries(bigint, timestamptz, integer) IS
    'Retention, one batch: finished deliveries of an id range that finished before the cutoff, with their events.';

-- The notifications given (whose deliveries a batch just removed) that have no
-- delivery left: they go with their remaining (notification-level) events. No
-- row lock is taken first: only enqueue adds deliveries, and only to the
-- notification it just created, so nothing can revive one between the check and
-- the delete.
CREATE FUNCTION outbox.prune_notifications(p_ids bigint[])
RETURNS TABLE (notifications bigint, events bigint)
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET outbox.retention = 'on'
AS $$
WITH doomed AS (
    SELECT n.id
    FROM outbox.notifications n
    WHERE n.id = ANY (p_ids)
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.notification_id = n.id)
), gone AS (
    DELETE FROM outbox.notifications n USING doomed x WHERE n.id = x.id RETURNING n.id
), events_gone AS (
    DELETE FROM outbox.events e USING gone g WHERE e.notification_id = g.id RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM events_gone);
$$;
COMMENT ON FUNCTION outbox.prune_notifications(bigint[]) IS
    'Retention: of the notifications given, those left with no delivery, with their events.';

-- One batch over notifications by id range: those created before the cutoff with
-- no delivery at all (left behind by `outbox dlq purge`, for instance) go, with
-- their events.
CREATE FUNCTION outbox.prune_orphan_notifications(p_after_id bigint, p_cutoff timestamptz,
                                                  p_batch_size integer)
RETURNS TABLE (last_id bigint, oldest_created_at timestamptz, notifications bigint, events bigint)
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET outbox.retention = 'on'
AS $$
WITH win AS (
    SELECT n.id, n.created_at
    FROM outbox.notifications n
    WHERE n.id > p_after_id
    ORDER BY n.id
    LIMIT p_batch_size
), doomed AS (
    SELECT n.id
    FROM outbox.notifications n
    WHERE n.id IN (SELECT w.id FROM win w)
      AND n.created_at < p_cutoff
      AND NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.notification_id = n.id)
), gone AS (
    DELETE FROM outbox.notifications n USING doomed x WHERE n.id = x.id RETURNING n.id
), events_gone AS (
    DELETE FROM outbox.events e USING gone g WHERE e.notification_id = g.id RETURNING 1
)
SELECT (SELECT max(w.id) FROM win w),
       (SELECT min(w.created_at) FROM win w),
       (SELECT count(*) FROM gone),
       (SELECT count(*) FROM events_gone);
$$;
COMMENT ON FUNCTION outbox.prune_orphan_notifications(bigint, timestamptz, integer) IS
    'Retention, one batch: notifications of an id range created before the cutoff with no delivery, with their events.';

-- One batch over events by id range: events that belong to no notification
-- (device deactivations, template activations) older than the cutoff go. Events
-- of kept notifications stay with them, however old.
CREATE FUNCTION outbox.prune_standalone_events(p_after_id bigint, p_cutoff timestamptz,
                                               p_batch_size integer)
RETURNS TABLE (last_id bigint, oldest_created_at timestamptz, events bigint)
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET outbox.retention = 'on'
AS $$
WITH win AS (
    SELECT e.id, e.created_at, e.notification_id
    FROM outbox.events e
    WHERE e.id > p_after_id
    ORDER BY e.id
    LIMIT p_batch_size
), gone AS (
    DELETE FROM outbox.events e
    USING win w
    WHERE e.id = w.id AND w.notification_id IS NULL AND w.created_at < p_cutoff
    RETURNING 1
)
SELECT (SELECT max(w.id) FROM win w),
       (SELECT min(w.created_at) FROM win w),
       (SELECT count(*) FROM gone);
$$;
COMMENT ON FUNCTION outbox.prune_standalone_events(bigint, timestamptz, integer) IS
    'Retention, one batch: events of an id range that belong to no notification, older than the cutoff.';

-- `outbox dlq purge` and the console's purge: the dead deliveries that match every
-- filter given (NULL: no filter; at least one is required), with their events.
-- What remains of each is one event on its notification, of kind 'cancelled'
-- (the delivery was given up for good) with detail.purged = true, who did it
-- (worker = p_actor, plus p_detail) and the error it had, so the message's
-- timeline says where its delivery went; retention removes that event with the
-- notification. The notifications stay until retention finds them without deliveries.
CREATE FUNCTION outbox.purge_dead(
    p_ids bigint[] DEFAULT NULL, p_message_ids text[] DEFAULT NULL, p_channel text DEFAULT NULL,
    p_provider text DEFAULT NULL, p_reason text DEFAULT NULL, p_since timestamptz DEFAULT NULL,
    p_before timestamptz DEFAULT NULL, p_actor text DEFAULT NULL, p_detail jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET outbox.retention = 'on'
AS $$
DECLARE
    v_purged bigint;
BEGIN
    IF num_nonnulls(p_ids, p_message_ids, p_channel, p_provider, p_reason, p_since, p_before) = 0 THEN
        RAISE EXCEPTION 'outbox.purge_dead: give at least one filter (ids, message ids, channel, '
                        'provider, reason, since, before)'
            USING ERRCODE = 'OB001', COLUMN = 'p_before';
    END IF;
    WITH target AS (
        SELECT d.id
        FROM outbox.deliveries d
        JOIN outbox.notifications n ON n.id = d.notification_id
        WHERE d.status = 'dead'
          AND (p_ids IS NULL OR d.id = ANY (p_ids))
          AND (p_message_ids IS NULL OR n.message_id = ANY (p_message_ids))
          AND (p_channel IS NULL OR d.channel::text = p_channel)
          AND (p_provider IS NULL OR d.provider = p_provider)
          AND (p_reason IS NULL OR d.last_error ILIKE '%' || p_reason || '%')
          AND (p_since IS NULL OR d.finished_at >= p_since)
          AND (p_before IS NULL OR d.finished_at < p_before)
        FOR UPDATE OF d
    ), gone AS (
        DELETE FROM outbox.deliveries d
        USING target t
        WHERE d.id = t.id
        RETURNING d.id, d.notification_id, d.channel, d.attempts, d.last_error
    ), events_gone AS (
        -- The statement's snapshot: the event inserted below is not among these.
        DELETE FROM outbox.events e USING gone g
        WHERE e.notification_id = g.notification_id AND e.delivery_id = g.id
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
        SELECT g.notification_id, g.id, 'cancelled', g.attempts, p_actor,
               jsonb_build_object('purged', true, 'channel', g.channel::text,
                                  'previous_error', g.last_error)
               || coalesce(p_detail, '{}')
        FROM gone g
    )
    SELECT count(*) INTO v_purged FROM gone;
    RETURN v_purged;
END
$$;
COMMENT ON FUNCTION outbox.purge_dead(bigint[], text[], text, text, text, timestamptz, timestamptz, text, jsonb) IS
    'The dead-letter queue''s purge: the dead deliveries matching every filter given, with their events; each leaves a cancelled event saying who purged it.';

REVOKE EXECUTE ON FUNCTION outbox.prune_deliveries(bigint, timestamptz, integer),
                           outbox.prune_notifications(bigint[]),
                           outbox.prune_orphan_notifications(bigint, timestamptz, integer),
                           outbox.prune_standalone_events(bigint, timestamptz, integer),
                           outbox.purge_dead(bigint[], text[], text, text, text, timestamptz, timestamptz, text, jsonb)
    FROM PUBLIC;
