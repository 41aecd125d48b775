-- Revision 0011: outbox.redact and outbox.erase_recipient (copied from
-- sql/functions/registry.sql). Definer and grants: 0011_api_roles.sql.

-- outbox.redact: `value` with every occurrence of each of `secrets` replaced by
-- '[erased]', longest first (so an address that contains another goes whole).
-- A helper of outbox.erase_recipient.
CREATE OR REPLACE FUNCTION outbox.redact(value text, secrets text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    s text;
BEGIN
    IF value IS NULL THEN
        RETURN NULL;
    END IF;
    FOR s IN SELECT x FROM unnest(secrets) AS x WHERE length(x) >= 3 ORDER BY length(x) DESC, x LOOP
        value := replace(value, s, '[erased]');
    END LOOP;
    RETURN value;
END
$$;
COMMENT ON FUNCTION outbox.redact(text, text[]) IS
    'Replace each of the given strings (at least 3 characters) in a text with [erased]; used by erase_recipient.';


-- outbox.erase_recipient: the right to erasure (GDPR art. 17) for one recipient.
--
-- Afterwards nothing in the outbox schema names the person or reaches them:
--   * their unsent deliveries (pending, and processing: a worker that holds one
--     finds its lease gone and records nothing) are cancelled, with an event;
--   * every delivery of their notifications has its destination replaced by
--     'erased:<delivery id>' and the addresses and tokens scrubbed from its
--     last error; their notifications keep their message id (the idempotency
--     key: a producer retrying it gets the old notification, not a new send)
--     but lose their data ('{}');
--   * the events of those notifications whose detail mentions an address,
--     number or token are rewritten with it scrubbed, keeping their id, time
--     and kind (the one exception to the trail's append-only rule, made here
--     and recorded);
--   * their rate buckets, devices and preferences, and the recipient row, are
--     deleted;
--   * an 'erased' event is written on each of their notifications, and one
--     standalone 'erased' event with the counts and the internal id (never
--     the application's user id).
-- Kept: suppressions (an address that bounced or said STOP stays suppressed:
-- that list exists so as not to contact it again) and notifications sent to a
-- direct address, which belong to no recipient. Returns the counts as jsonb.
CREATE OR REPLACE FUNCTION outbox.erase_recipient(recipient text, actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
-- The scrub below rewrites events by delete and insert, one of the few deletes
-- events_no_delete (sql/retention.sql) lets through.
SET outbox.retention = 'on'
AS $$
#variable_conflict use_variable
DECLARE
    v_rid            bigint;
    v_secrets        text[];
    v_notifications  bigint[];
    v_devices        integer;
    v_preferences    integer;
    v_deliveries     integer;
    v_cancelled      integer;
    v_events         integer;
    v_result         jsonb;
BEGIN
    SELECT r.id INTO v_rid FROM outbox.recipients r WHERE r.external_id = recipient FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.erase_recipient: unknown recipient %', coalesce(quote_literal(recipient), 'NULL')
            USING ERRCODE = 'OB006', COLUMN = 'recipient';
    END IF;

    SELECT coalesce(array_agg(n.id ORDER BY n.id), '{}') INTO v_notifications
    FROM outbox.notifications n WHERE n.recipient_id = v_rid;

    -- Every string that could name or reach the person: their addresses, their
    -- tokens, and every destination their deliveries went to (an address they
    -- have since changed included).
    SELECT coalesce(array_agg(DISTINCT s.v) FILTER (WHERE s.v IS NOT NULL AND s.v <> ''), '{}')
    INTO v_secrets
    FROM (
        SELECT r.email AS v FROM outbox.recipients r WHERE r.id = v_rid
        UNION ALL SELECT r.phone FROM outbox.recipients r WHERE r.id = v_rid
        UNION ALL SELECT d.token FROM outbox.devices d WHERE d.recipient_id = v_rid
        UNION ALL SELECT d.destination FROM outbox.deliveries d WHERE d.notification_id = ANY (v_notifications)
    ) s;

    -- Nothing more goes out to them.
    WITH unsent AS (
        SELECT d.id, d.notification_id, d.attempts, d.status = 'processing' AS in_flight
        FROM outbox.deliveries d
        WHERE d.notification_id = ANY (v_notifications) AND d.status IN ('pending', 'processing')
        FOR UPDATE
    ), stopped AS (
        UPDATE outbox.deliveries d
        SET status = 'cancelled', last_error = 'recipient erased', lease_owner = NULL,
            lease_expires_at = NULL, in_doubt = d.in_doubt + u.in_flight::integer,
            finished_at = now(), updated_at = now()
        FROM unsent u WHERE d.id = u.id
        RETURNING d.id
    ), logged AS (
        INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
        SELECT u.notification_id, u.id, 'cancelled', u.attempts, actor,
               jsonb_build_object('reason', 'recipient erased', 'in_flight', u.in_flight)
        FROM unsent u JOIN stopped s ON s.id = u.id
        RETURNING 1
    )
    SELECT count(*) INTO v_cancelled FROM logged;

    UPDATE outbox.deliveries d
    SET destination = 'erased:' || d.id, last_error = outbox.redact(d.last_error, v_secrets),
        updated_at = now()
    WHERE d.notification_id = ANY (v_notifications);
    GET DIAGNOSTICS v_deliveries = ROW_COUNT;

    UPDATE outbox.notifications n SET data = '{}', address = NULL WHERE n.id = ANY (v_notifications);

    -- Events are never updated (events_append_only): the ones that mention the
    -- person are replaced by scrubbed copies with the same id, time and kind.
    WITH mentioning AS (
        DELETE FROM outbox.events e
        WHERE e.notification_id = ANY (v_notifications) AND e.detail IS NOT NULL
          AND EXISTS (SELECT 1 FROM unnest(v_secrets) s WHERE strpos(e.detail::text, s) > 0)
        RETURNING e.*
    ), scrubbed AS (
        INSERT INTO outbox.events (id, notification_id, delivery_id, kind, attempt, worker, detail, created_at)
        OVERRIDING SYSTEM VALUE
        SELECT m.id, m.notification_id, m.delivery_id, m.kind, m.attempt, m.worker,
               outbox.redact(m.detail::text, v_secrets)::jsonb, m.created_at
        FROM mentioning m
        RETURNING 1
    )
    SELECT count(*) INTO v_events FROM scrubbed;

    -- A missing bucket is a full one: deleting theirs changes no limit.
    DELETE FROM outbox.rate_buckets b
    WHERE b.scope = 'recipient'
      AND (b.subject = 'recipient:' || v_rid
           OR b.subject IN (SELECT 'device:' || md5(d.token) FROM outbox.devices d WHERE d.recipient_id = v_rid));

    SELECT count(*) INTO v_devices FROM outbox.devices d WHERE d.recipient_id = v_rid;
    SELECT count(*) INTO v_preferences FROM outbox.preferences p WHERE p.recipient_id = v_rid;
    -- Devices and preferences go with it (ON DELETE CASCADE); notifications stay, unlinked.
    DELETE FROM outbox.recipients r WHERE r.id = v_rid;

    v_result := jsonb_build_object(
        'recipient_id', v_rid, 'notifications', cardinality(v_notifications),
        'deliveries', v_deliveries, 'cancelled', v_cancelled, 'devices', v_devices,
        'preferences', v_preferences, 'events_scrubbed', v_events);
    INSERT INTO outbox.events (notification_id, kind, worker, detail)
    SELECT n, 'erased', actor, jsonb_build_object('reason', 'recipient erased')
    FROM unnest(v_notifications) AS n;
    INSERT INTO outbox.events (kind, worker, detail) VALUES ('erased', actor, v_result);
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION outbox.erase_recipient(text, text) IS
    'Erase a recipient (GDPR): cancel their unsent deliveries, scrub their addresses and tokens from '
    'deliveries and events, empty their notifications'' data, delete them with their devices and preferences.';
