-- Undo sql/roles.sql in this database (what the downgrades of migrations 0009 and
-- 0003 take away together; each runs its own frozen file).
--
-- The roles themselves stay. They are cluster-wide: other databases on the
-- same server may use them, and login roles are members of them; dropping them
-- here would break those, or fail because of their grants elsewhere. What
-- belongs to this database goes: every privilege they hold on the outbox
-- schema and its objects, and the default privileges. A DBA who wants them gone
-- everywhere runs, in each database, REASSIGN/DROP OWNED BY and then DROP ROLE.
-- The producer functions go back to SECURITY INVOKER, executable by PUBLIC, as
-- migration 0001 created them.

DO $revoke$
DECLARE
    r  text;
    f  regprocedure;
    producer_functions CONSTANT text[] := ARRAY[
        'enqueue', 'enqueue_many', 'enqueue_items', 'upsert_recipient', 'register_device', 'deactivate_device',
        'set_preference', 'cancel', 'cancel_detailed'];
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname = ANY (producer_functions)
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER RESET search_path', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;

    -- Row security on events names the roles (sql/roles.sql, since 0009).
    DROP POLICY IF EXISTS events_read ON outbox.events;
    DROP POLICY IF EXISTS events_worker ON outbox.events;
    DROP POLICY IF EXISTS events_webhooks ON outbox.events;
    ALTER TABLE outbox.events DISABLE ROW LEVEL SECURITY;

    FOR r IN
        SELECT rolname FROM pg_roles
        WHERE rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader', 'outbox_webhooks')
    LOOP
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA outbox REVOKE ALL ON TABLES FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA outbox FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM %I', r);
        EXECUTE format('REVOKE ALL ON SCHEMA outbox FROM %I', r);
    END LOOP;
END
$revoke$;
