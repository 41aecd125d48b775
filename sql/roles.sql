-- Least-privilege roles for Outbox. Installed by migration 0003
-- (migrations/versions/0003_roles.py); idempotent, so a DBA may also run it by
-- hand (psql -f sql/roles.sql) after creating the roles, or after a migration
-- that re-created the producer functions (CREATE OR REPLACE resets SECURITY
-- DEFINER; tests/integration/test_ops.py catches that in CI).
--
-- Three NOLOGIN group roles. Give them to login roles, e.g.
--   CREATE ROLE shop_app LOGIN PASSWORD '...' IN ROLE outbox_producer;
--   CREATE ROLE outbox_worker_login LOGIN PASSWORD '...' IN ROLE outbox_worker;
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE outbox_reader;
--
-- outbox_producer  the application: EXECUTE on the producer functions (enqueue,
--                  enqueue_many, upsert_recipient, register_device,
--                  deactivate_device, set_preference, cancel, cancel_detailed)
--                  and nothing else:
--                  no table rights at all. The functions are SECURITY DEFINER,
--                  so they write as their owner and keep every check the
--                  database makes; search_path is pinned (pg_catalog, pg_temp)
--                  so a caller cannot slip its own objects into them, and
--                  EXECUTE is revoked from PUBLIC. Table grants instead would
--                  let a producer write rows that bypass enqueue's validation,
--                  idempotency and suppression rules.
-- outbox_worker    workers, the webhook receiver, `outbox prune` and `outbox dlq`:
--                  read every table; change deliveries, devices and rate buckets;
--                  append events, suppressions and opt-outs; delete history
--                  (retention, DLQ purge). No DDL, no template changes.
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
        'enqueue', 'enqueue_many', 'upsert_recipient', 'register_device', 'deactivate_device',
        'set_preference', 'cancel', 'cancel_detailed'];
BEGIN
    FOREACH r IN ARRAY ARRAY['outbox_producer', 'outbox_worker', 'outbox_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                EXECUTE format('COMMENT ON ROLE %I IS %L', r, CASE r
                    WHEN 'outbox_producer' THEN 'Outbox: enqueue and register through the SQL functions only.'
                    WHEN 'outbox_worker' THEN 'Outbox: workers and the webhook receiver (claim, record, retain).'
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

    GRANT USAGE ON SCHEMA outbox TO outbox_producer, outbox_worker, outbox_reader;

    -- Producers: the functions, as their owner.
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname = ANY (producer_functions)
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_producer', f);
    END LOOP;

    -- Workers (and the webhook receiver): read everything; write what they own.
    -- SELECT ... FOR UPDATE needs UPDATE, hence UPDATE on deliveries.
    GRANT SELECT ON ALL TABLES IN SCHEMA outbox TO outbox_worker;
    GRANT UPDATE, DELETE ON outbox.deliveries TO outbox_worker;
    GRANT INSERT, DELETE ON outbox.events TO outbox_worker;
    GRANT DELETE ON outbox.notifications TO outbox_worker;
    GRANT UPDATE ON outbox.devices TO outbox_worker;
    GRANT INSERT ON outbox.suppressions TO outbox_worker;
    GRANT INSERT, UPDATE ON outbox.preferences TO outbox_worker;
    GRANT INSERT, UPDATE, DELETE ON outbox.rate_buckets TO outbox_worker;

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
-- has none. Added by migration 0006.
DO $version$
DECLARE
    r text;
BEGIN
    IF to_regclass('public.outbox_alembic_version') IS NULL THEN
        RETURN;  -- installed without alembic (sql/ by hand): no version to read
    END IF;
    FOR r IN
        SELECT rolname FROM pg_roles
        WHERE rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader')
    LOOP
        EXECUTE format('GRANT SELECT ON public.outbox_alembic_version TO %I', r);
    END LOOP;
END
$version$;
