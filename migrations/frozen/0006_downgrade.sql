-- Revision 0006, downgrade: the roles no longer read the version table.
DO $version$
DECLARE
    r text;
BEGIN
    IF to_regclass('public.outbox_alembic_version') IS NULL THEN
        RETURN;
    END IF;
    FOR r IN
        SELECT rolname FROM pg_roles
        WHERE rolname IN ('outbox_producer', 'outbox_worker', 'outbox_reader')
    LOOP
        EXECUTE format('REVOKE SELECT ON public.outbox_alembic_version FROM %I', r);
    END LOOP;
END
$version$;
