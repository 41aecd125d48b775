-- Revision 0009: least privilege for the worker, a role of its own for the
-- webhook receiver, row security on events. Runs after 0009_retention.sql (the
-- retention functions it grants). The statements sql/roles.sql now holds for
-- these, and nothing else of it: what each role may do is explained there.
--
-- Only where 0003 made the roles (roles are optional). outbox_webhooks is
-- created if missing; a runner that may not create it gets a WARNING and this
-- revision changes no privilege (the receiver, still on outbox_worker, keeps
-- working): a DBA then creates the role and runs sql/roles.sql, which makes the
-- same changes.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_worker') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_webhooks') THEN
        BEGIN
            CREATE ROLE outbox_webhooks NOLOGIN;
            COMMENT ON ROLE outbox_webhooks IS 'Outbox: the webhook receiver (apply delivery receipts only).';
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'outbox roles skipped: % may not create role outbox_webhooks. A DBA '
                              'can create it (CREATE ROLE outbox_webhooks NOLOGIN) and then run '
                              'sql/roles.sql.', current_user;
                RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA outbox TO outbox_webhooks;

    -- The worker: only the columns it writes; no DELETE but through retention.
    REVOKE UPDATE, DELETE ON outbox.deliveries, outbox.events, outbox.notifications,
                             outbox.devices, outbox.preferences FROM outbox_worker;
    REVOKE INSERT ON outbox.preferences FROM outbox_worker;
    GRANT UPDATE (status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider,
                  provider_message_id, template_id, last_error, in_doubt, sent_at, finished_at,
                  updated_at) ON outbox.deliveries TO outbox_worker;
    GRANT UPDATE (active, deactivated_at, deactivated_reason) ON outbox.devices TO outbox_worker;
    GRANT EXECUTE ON FUNCTION outbox.prune_deliveries(bigint, timestamptz, integer),
                              outbox.prune_notifications(bigint[]),
                              outbox.prune_orphan_notifications(bigint, timestamptz, integer),
                              outbox.prune_standalone_events(bigint, timestamptz, integer),
                              outbox.purge_dead(bigint[], text[], text, text, text, timestamptz, timestamptz, text, jsonb)
        TO outbox_worker;

    -- The webhook receiver: what sql/queries/receipts.sql needs.
    GRANT SELECT ON outbox.deliveries, outbox.preferences, outbox.suppressions TO outbox_webhooks;
    GRANT SELECT (id, message_id) ON outbox.notifications TO outbox_webhooks;
    GRANT SELECT (id, email, phone) ON outbox.recipients TO outbox_webhooks;
    GRANT SELECT (kind, detail) ON outbox.events TO outbox_webhooks;
    GRANT UPDATE (status, sent_at, delivered_at, provider, last_error, finished_at, updated_at)
        ON outbox.deliveries TO outbox_webhooks;
    GRANT INSERT ON outbox.events, outbox.suppressions TO outbox_webhooks;
    GRANT INSERT (recipient_id, channel, category, opted_in), UPDATE (opted_in, updated_at)
        ON outbox.preferences TO outbox_webhooks;

    -- Which events each role may append.
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

    -- The receiver checks the schema revision at start-up, as the others do (0006).
    IF to_regclass('public.outbox_alembic_version') IS NOT NULL THEN
        GRANT SELECT ON public.outbox_alembic_version TO outbox_webhooks;
    END IF;
END
$roles$;
