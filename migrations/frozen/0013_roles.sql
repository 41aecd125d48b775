-- Revision 0013 (upgrade and downgrade, after the functions are (re-)created):
-- the grants sql/roles.sql and sql/api_roles.sql give at 0013, for what this
-- revision adds or re-creates, wherever those roles are installed.
--
-- CREATE OR REPLACE of cancel_detailed keeps its grants but resets SECURITY
-- DEFINER and its pinned search_path: put them back where sql/roles.sql had set
-- them up (its grant to outbox_producer shows it), as 0007 does. The new
-- producer functions get what roles.sql gives every producer function; the
-- segment broadcast stays SECURITY INVOKER (it runs the caller's query) with
-- EXECUTE for outbox_producer only; outbox_api gets the new functions but
-- that one.
DO $broadcast_roles$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname = 'cancel_detailed'
          AND EXISTS (SELECT 1 FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                      WHERE r.rolname = 'outbox_producer' AND a.privilege_type = 'EXECUTE')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f);
    END LOOP;

    IF to_regprocedure('outbox.broadcast(text, text, text, jsonb, text[], text, integer, timestamptz, timestamptz, bigint, integer)') IS NULL
       OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_producer') THEN
        RETURN;  -- a downgrade (the functions are gone), or no roles installed
    END IF;
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'outbox'::regnamespace
          AND p.proname IN ('create_topic', 'subscribe', 'unsubscribe', 'broadcast', 'broadcast_list',
                            'cancel_broadcast')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_producer', f);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_api') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_api', f);
        END IF;
    END LOOP;
    REVOKE EXECUTE ON FUNCTION outbox.broadcast_segment(text, text, text, jsonb, text[], text, integer,
                                                        timestamptz, timestamptz, text, integer) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION outbox.broadcast_segment(text, text, text, jsonb, text[], text, integer,
                                                       timestamptz, timestamptz, text, integer) TO outbox_producer;
END
$broadcast_roles$;
