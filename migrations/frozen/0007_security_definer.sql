-- Revision 0007 (upgrade and downgrade, after the functions are re-created):
-- CREATE OR REPLACE keeps a function's grants but resets SECURITY DEFINER and its
-- pinned search_path. Put them back on the functions this revision re-creates,
-- wherever sql/roles.sql (revision 0003) had set them up, which its grant to
-- outbox_producer shows; elsewhere (no roles) nothing changes.
DO $definer$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace
          AND p.proname IN ('enqueue', 'enqueue_many', 'upsert_recipient')
          AND EXISTS (SELECT 1 FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                      WHERE r.rolname = 'outbox_producer' AND a.privilege_type = 'EXECUTE')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$definer$;
