-- Revision 0006: the outbox roles may read which schema revision is installed.
--
-- Workers, the webhook receiver and the CLI's reading commands check the
-- revision before they start (outbox.migrate.check) and refuse a schema they
-- were not built for. Without this grant a least-privilege login could only
-- tell that the schema exists, not which revision it is at.
-- Frozen copy of the block at the end of sql/roles.sql.
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
