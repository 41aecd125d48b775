-- Least-privilege roles for Outbox. Installed by migration 0003
-- (migrations/versions/0003_roles.py), narrowed and joined by outbox_webhooks in
-- 0009 (0009_least_privilege.py); idempotent, so a DBA may also run it by
-- hand (psql -f sql/roles.sql) after creating the roles, or after a migration
-- that re-created the producer functions (CREATE OR REPLACE resets SECURITY
-- DEFINER; tests/integration/test_ops.py catches that in CI).
--
-- Four NOLOGIN group roles. Give them to login roles, one login per service, e.g.
--   CREATE ROLE shop_app LOGIN PASSWORD '...' IN ROLE outbox_producer;
--   CREATE ROLE outbox_worker_login LOGIN PASSWORD '...' IN ROLE outbox_worker;
--   CREATE ROLE outbox_hooks LOGIN PASSWORD '...' IN ROLE outbox_webhooks;
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE outbox_reader;
-- docs/operations.md ("Roles") has the table of what each may do and may not.
--
-- outbox_producer  the application: EXECUTE on the producer functions (enqueue,
--                  enqueue_many, enqueue_items, upsert_recipient, register_device,
--                  deactivate_device, set_preference, cancel, cancel_detailed;
--                  create_topic, subscribe, unsubscribe, broadcast,
--                  broadcast_list, cancel_broadcast since 0013) and nothing else:
--                  no table rights at all. The functions are SECURITY DEFINER,
--                  so they write as their owner and keep every check the
--                  database makes; search_path is pinned (pg_catalog, pg_temp)
--                  so a caller cannot slip its own objects into them, and
--                  EXECUTE is revoked from PUBLIC. Table grants instead would
--                  let a producer write rows that bypass enqueue's validation,
--                  idempotency and suppression rules. One exception:
--                  broadcast_segment runs the caller's own SQL query, so it
--                  stays SECURITY INVOKER (the query reads what the caller may
--                  read) and hands the ids it finds to broadcast_list.
-- outbox_worker    workers, `outbox prune` and `outbox dlq`: read every table;
--                  update only the delivery columns the worker writes (status,
--                  lease, attempts, schedule, provider and its message id, errors,
--                  timestamps; never destination, channel, notification, priority
--                  or max_attempts) and only the deactivation of devices; write
--                  rate buckets and breakers; append suppressions and the events
--                  it records (row security: not created, receipt, delivered or
--                  template_activated); delete history only through the retention
--                  functions (sql/retention.sql). Added by migration 0009: before
--                  it, this role also ran the webhook receiver and had UPDATE and
--                  DELETE on whole tables.
-- outbox_webhooks  the webhook receiver (internet-facing), and nothing else: what
--                  sql/queries/receipts.sql needs. Read deliveries, their
--                  notification's id and message id, recipients' addresses,
--                  preferences and suppressions; update a delivery's status columns
--                  (status, sent_at, delivered_at, provider, last_error,
--                  finished_at, updated_at); append receipt events and the
--                  delivered/dead events of the deliveries it moves; suppress
--                  addresses; record opt-outs. No DELETE, no devices, rate
--                  buckets, breakers, templates or template data. Migration 0009.
-- outbox_reader    dashboards, DBAs, `outbox status` / `outbox inspect`: SELECT on
--                  every table and view, including future ones.
--
-- Roles are cluster-wide: they are created only if missing (another database
-- of the same server may already use them), and a runner that may not create
-- roles gets a WARNING and no roles, rather than a failed migration (roles are
-- optional). Template management (create_template, activate_template) stays
-- with the schema owner: it is a deploy step, not a producer's job.

DO $roles$
DECLARE
    r        text;
    f        regprocedure;
    missing  text[] := '{}';
    producer_functions CONSTANT text[] := ARRAY[
        'enqueue', 'enqueue_many', 'enqueue_items', 'upsert_recipient', 'register_device', 'deactivate_device',
        'set_preference', 'cancel', 'cancel_detailed',
        'create_topic', 'subscribe', 'unsubscribe', 'broadcast', 'broadcast_list', 'cancel_broadcast'];
BEGIN
    FOREACH r IN ARRAY ARRAY['outbox_producer', 'outbox_worker', 'outbox_reader', 'outbox_webhooks'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                EXECUTE format('COMMENT ON ROLE %I IS %L', r, CASE r
                    WHEN 'outbox_producer' THEN 'Outbox: enqueue and register through the SQL functions only.'
                    WHEN 'outbox_worker' THEN 'Outbox: workers, outbox prune and outbox dlq (claim, record, retain).'
                    WHEN 'outbox_webhooks' THEN 'Outbox: the webhook receiver (apply delivery receipts only).'
                    ELSE 'Outbox: read-only (dashboards, DBAs, outbox status).' END);
            EXCEPTION
                -- Another database's migration created it at the same moment.
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN missing := missing || r;
            END;
        END IF;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE WARNING 'outbox roles skipped: % may not create roles %. A DBA can create them '
                      '(CREATE ROLE <name> NOLOGIN) and then run sql/roles.sql.', current_user, missing;
        RETURN;
    END IF;

    GRANT USAGE ON SCHEMA outbox TO outbox_producer, outbox_worker, outbox_reader, outbox_webhooks;

    -- Producers: the functions, as their owner.
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname = ANY (producer_functions)
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_producer', f);
    END LOOP;
    -- Invoker on purpose (above): EXECUTE only, no SECURITY DEFINER.
    REVOKE EXECUTE ON FUNCTION outbox.broadcast_segment(text, text, text, jsonb, text[], text, integer,
                                                        timestamptz, timestamptz, text, integer) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION outbox.broadcast_segment(text, text, text, jsonb, text[], text, integer,
                                                       timestamptz, timestamptz, text, integer) TO outbox_producer;

    -- Workers: read everything; write only the columns they write. A column a
    -- later migration adds is readable (table-level SELECT) but not writable until
    -- that migration grants it here. The REVOKEs make this file correct when run
    -- by hand on a schema installed before 0009 (whole-table UPDATE and DELETE);
    -- on a fresh one they change nothing. SELECT ... FOR UPDATE needs UPDATE on
    -- one column, which the column grants give.
    GRANT SELECT ON ALL TABLES IN SCHEMA outbox TO outbox_worker;
    REVOKE UPDATE, DELETE ON outbox.deliveries, outbox.events, outbox.notifications,
                             outbox.devices, outbox.preferences FROM outbox_worker;
    REVOKE INSERT ON outbox.preferences FROM outbox_worker;
    GRANT UPDATE (status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider,
                  provider_message_id, template_id, last_error, in_doubt, sent_at, finished_at,
                  updated_at) ON outbox.deliveries TO outbox_worker;
    GRANT INSERT ON outbox.events TO outbox_worker;
    GRANT UPDATE (active, deactivated_at, deactivated_reason) ON outbox.devices TO outbox_worker;
    GRANT INSERT ON outbox.suppressions TO outbox_worker;
    GRANT INSERT, UPDATE, DELETE ON outbox.rate_buckets TO outbox_worker;
    -- Retention (sql/retention.sql): the only way history is deleted.
    GRANT EXECUTE ON FUNCTION outbox.prune_deliveries(bigint, timestamptz, integer),
                              outbox.prune_notifications(bigint[]),
                              outbox.prune_orphan_notifications(bigint, timestamptz, integer),
                              outbox.prune_standalone_events(bigint, timestamptz, integer),
                              outbox.purge_dead(bigint[], text[], text, text, text, timestamptz, timestamptz, text, jsonb)
        TO outbox_worker;

    -- The webhook receiver: what sql/queries/receipts.sql reads and writes, no more.
    -- Not the notifications' data (template variables may hold codes) nor any table
    -- it does not name; no default privileges, so later tables stay closed to it.
    GRANT SELECT ON outbox.deliveries, outbox.preferences, outbox.suppressions TO outbox_webhooks;
    GRANT SELECT (id, message_id) ON outbox.notifications TO outbox_webhooks;
    GRANT SELECT (id, email, phone) ON outbox.recipients TO outbox_webhooks;
    GRANT SELECT (kind, detail) ON outbox.events TO outbox_webhooks;
    GRANT UPDATE (status, sent_at, delivered_at, provider, last_error, finished_at, updated_at)
        ON outbox.deliveries TO outbox_webhooks;
    GRANT INSERT ON outbox.events, outbox.suppressions TO outbox_webhooks;
    GRANT INSERT (recipient_id, channel, category, opted_in), UPDATE (opted_in, updated_at)
        ON outbox.preferences TO outbox_webhooks;

    -- Which events each role may append (row security; the owner, and so every
    -- SECURITY DEFINER function, is not subject to it). A worker records claims,
    -- results, recoveries, releases, requeues and device deactivations, and may
    -- record a cancel it honours; the receiver records receipts and the
    -- delivered/dead transitions of the deliveries they move, always as
    -- 'webhook:<provider>'. A kind a later migration has a role record must be
    -- added to its policy here. Reading is left to table privileges.
    ALTER TABLE outbox.events ENABLE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS events_read ON outbox.events;
    CREATE POLICY events_read ON outbox.events FOR SELECT USING (true);
    DROP POLICY IF EXISTS events_worker ON outbox.events;
    CREATE POLICY events_worker ON outbox.events FOR INSERT TO outbox_worker
        WITH CHECK (kind IN ('processing', 'sent', 'retry', 'deferred', 'dead', 'expired',
                             'suppressed', 'released', 'recovered', 'requeued', 'cancelled',
                             'device_deactivated')
                    AND worker NOT LIKE 'webhook:%');
    DROP POLICY IF EXISTS events_webhooks ON outbox.events;
    CREATE POLICY events_webhooks ON outbox.events FOR INSERT TO outbox_webhooks
        WITH CHECK (worker LIKE 'webhook:%'
                    AND (kind = 'receipt'
                         OR (kind IN ('delivered', 'dead') AND delivery_id IS NOT NULL)));

    -- Readers: every table and view.
    GRANT SELECT ON ALL TABLES IN SCHEMA outbox TO outbox_reader;

    -- Tables and views later migrations add are readable by both without a grant;
    -- writes to them must be granted by the migration that adds them.
    ALTER DEFAULT PRIVILEGES IN SCHEMA outbox GRANT SELECT ON TABLES TO outbox_worker, outbox_reader;
END
$roles$;

-- Every outbox role may read which schema revision is installed: workers, the
-- webhook receiver and the CLI's reading commands check it before they start
-- (outbox.migrate.check) and refuse a schema they were not built for. The table
-- is alembic's, outside the outbox schema; a schema installed without alembic
-- has none. Added by migration 0006 (outbox_webhooks: 0009).
DO $version$
DECLARE
    r text;
BEGIN
    IF to_regclass('public.outbox_alembic_version') IS NULL THEN
        RETURN;  -- installed without alembic (sql/ by hand): no version to read
    END IF;
    FOR r IN
        SELECT rolname FROM pg_roles
        WHERE rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader', 'outbox_webhooks')
    LOOP
        EXECUTE format('GRANT SELECT ON public.outbox_alembic_version TO %I', r);
    END LOOP;
END
$version$;
