-- Revision 0012 (after 0012_enqueue.sql and 0007_security_definer.sql): the new
-- producer function outbox.enqueue_items gets what sql/roles.sql (0003, 0009) and
-- sql/api_roles.sql (0011) give every producer function, wherever they were set
-- up, which their grants on outbox.enqueue show; elsewhere (no roles) nothing
-- changes. CREATE OR REPLACE of enqueue and enqueue_many reset their SECURITY
-- DEFINER, which 0007_security_definer.sql puts back.
DO $grants$
DECLARE
    c_items CONSTANT text := 'outbox.enqueue_items(outbox.enqueue_item[], text, bigint)';
    c_enqueue CONSTANT regprocedure :=
        'outbox.enqueue(text, text, text, jsonb, text[], text, text, integer, timestamptz, timestamptz)'::regprocedure;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_producer')
       AND has_function_privilege('outbox_producer', c_enqueue, 'EXECUTE')
       AND NOT has_function_privilege('public', c_enqueue, 'EXECUTE') THEN
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', c_items);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', c_items);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_producer', c_items);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_proc p, aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
               WHERE p.oid = c_enqueue AND r.rolname = 'outbox_api' AND a.privilege_type = 'EXECUTE') THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_api', c_items);
    END IF;
END
$grants$;
