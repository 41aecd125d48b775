-- The role of the HTTP API (`outbox api`): outbox_api. Installed by migration
-- 0011; idempotent, so a DBA may run it by hand after sql/roles.sql. Give it to
-- the API's login:
--   CREATE ROLE outbox_api_svc LOGIN PASSWORD '...' IN ROLE outbox_api;
--
-- outbox_api  EXECUTE on the functions the API calls: the producer functions
--             (enqueue, enqueue_many, enqueue_items, upsert_recipient, register_device,
--             deactivate_device, set_preference, cancel, cancel_detailed,
--             erase_recipient; create_topic, subscribe, unsubscribe,
--             broadcast, broadcast_list, cancel_broadcast since 0013) and
--             api_authenticate, but not broadcast_segment: an HTTP client
--             does not get to run SQL; SELECT on the tables its GET endpoints read
--             (recipients, devices, preferences, notifications, deliveries,
--             events). No writes to any table: every change goes through a
--             function, with its checks. It cannot read key hashes
--             (api_authenticate answers it) nor create keys (`outbox api-keys`
--             runs as the schema owner).
--
-- Like the other roles it is cluster-wide, created only if missing, and skipped
-- with a WARNING when the runner may not create roles or sql/roles.sql made no
-- roles (roles are optional). This file also makes erase_recipient a producer
-- function like the others (definer, pinned search_path, EXECUTE for
-- outbox_producer), and keeps key hashes from the worker and reader roles,
-- which read every other table: the reader sees every column but the hash.

DO $api$
DECLARE
    f  regprocedure;
    r  text;
    api_functions CONSTANT text[] := ARRAY[
        'enqueue', 'enqueue_many', 'enqueue_items', 'upsert_recipient', 'register_device', 'deactivate_device',
        'set_preference', 'cancel', 'cancel_detailed', 'erase_recipient', 'api_authenticate',
        'create_topic', 'subscribe', 'unsubscribe', 'broadcast', 'broadcast_list', 'cancel_broadcast'];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_producer') THEN
        RAISE WARNING 'outbox_api skipped: the outbox roles are not installed (see sql/roles.sql)';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_api') THEN
        BEGIN
            CREATE ROLE outbox_api NOLOGIN;
            COMMENT ON ROLE outbox_api IS 'Outbox: the HTTP API (outbox api): the producer functions and reads.';
        EXCEPTION
            -- Another database's migration created it at the same moment.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'outbox_api skipped: % may not create roles. A DBA can create it '
                              '(CREATE ROLE outbox_api NOLOGIN) and then run sql/api_roles.sql.', current_user;
                RETURN;
        END;
    END IF;

    ALTER FUNCTION outbox.erase_recipient(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
    REVOKE EXECUTE ON FUNCTION outbox.erase_recipient(text, text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION outbox.erase_recipient(text, text) TO outbox_producer;

    GRANT USAGE ON SCHEMA outbox TO outbox_api;
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname = ANY (api_functions)
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_api', f);
    END LOOP;
    GRANT SELECT ON outbox.recipients, outbox.devices, outbox.preferences, outbox.notifications,
                    outbox.deliveries, outbox.events TO outbox_api;

    -- Default privileges (sql/roles.sql's, and any a DBA or a later revision adds)
    -- give every table to some roles: not this one. Only its owner holds it whole;
    -- the reader gets every column but the hash.
    FOR r IN
        SELECT DISTINCT a.grantee::regrole::text
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE c.oid = 'outbox.api_keys'::regclass AND a.grantee NOT IN (0, c.relowner)
    LOOP
        EXECUTE format('REVOKE ALL ON outbox.api_keys FROM %s', r);
    END LOOP;
    REVOKE ALL ON outbox.api_keys FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_reader') THEN
        GRANT SELECT (id, name, prefix, scopes, created_at, created_by, last_used_at, revoked_at)
            ON outbox.api_keys TO outbox_reader;
    END IF;

    -- `outbox api` checks the schema revision at start-up (outbox.migrate.check).
    IF to_regclass('public.outbox_alembic_version') IS NOT NULL THEN
        GRANT SELECT ON public.outbox_alembic_version TO outbox_api;
    END IF;
END
$api$;
