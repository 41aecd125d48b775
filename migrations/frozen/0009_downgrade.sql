-- Revision 0009, downgrade: the privileges of 0008 back, the retention functions
-- and the events delete guard gone. The outbox_webhooks role stays (roles are
-- cluster-wide, see 0003_roles_revoke.sql); it loses everything it held here.
DO $roles$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_worker') THEN
        DROP POLICY IF EXISTS events_read ON outbox.events;
        DROP POLICY IF EXISTS events_worker ON outbox.events;
        DROP POLICY IF EXISTS events_webhooks ON outbox.events;
        ALTER TABLE outbox.events DISABLE ROW LEVEL SECURITY;
        -- REVOKE of a privilege on a table takes its column grants with it.
        REVOKE UPDATE ON outbox.deliveries, outbox.devices FROM outbox_worker;
        GRANT UPDATE, DELETE ON outbox.deliveries TO outbox_worker;
        GRANT INSERT, DELETE ON outbox.events TO outbox_worker;
        GRANT DELETE ON outbox.notifications TO outbox_worker;
        GRANT UPDATE ON outbox.devices TO outbox_worker;
        GRANT INSERT, UPDATE ON outbox.preferences TO outbox_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_webhooks') THEN
        REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM outbox_webhooks;
        REVOKE ALL ON SCHEMA outbox FROM outbox_webhooks;
        IF to_regclass('public.outbox_alembic_version') IS NOT NULL THEN
            REVOKE SELECT ON public.outbox_alembic_version FROM outbox_webhooks;
        END IF;
    END IF;
END
$roles$;

-- Dropping the functions takes their grants with them.
DROP FUNCTION outbox.purge_dead(bigint[], text[], text, text, text, timestamptz, timestamptz, text, jsonb);
DROP FUNCTION outbox.prune_standalone_events(bigint, timestamptz, integer);
DROP FUNCTION outbox.prune_orphan_notifications(bigint, timestamptz, integer);
DROP FUNCTION outbox.prune_notifications(bigint[]);
DROP FUNCTION outbox.prune_deliveries(bigint, timestamptz, integer);
DROP TRIGGER events_no_delete ON outbox.events;
DROP FUNCTION outbox.forbid_delete();
