-- Migration 0004, after 0004_breaker.sql: workers write the breaker table.
-- SELECT comes from the default privileges of 0003_roles.sql. Roles are optional
-- (0003 skips them without CREATEROLE): grant only if the role is present.
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_worker') THEN
        GRANT INSERT, UPDATE ON outbox.provider_breakers TO outbox_worker;
    END IF;
END
$grant$;
