-- The worker's writes on the breaker table (sql/breaker.sql): INSERT and UPDATE
-- on outbox.provider_breakers, when the outbox_worker role exists (sql/roles.sql
-- creates it; roles are optional). SELECT comes from roles.sql.
--
-- Apart from roles.sql only because migration 0004 added the table after 0003
-- had installed the roles; a DBA who runs roles.sql by hand runs this file after it.
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_worker') THEN
        GRANT INSERT, UPDATE ON outbox.provider_breakers TO outbox_worker;
    END IF;
END
$grant$;
