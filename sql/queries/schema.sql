-- The schema's own revision: `outbox worker`, `outbox webhooks` and the CLI commands
-- that read the schema check it at start-up (outbox/migrate.py, check()).

-- name: schema_revision
-- The alembic revision(s) the database is at. Unqualified, as alembic writes it
-- (the first schema of the search_path, normally public). A database that was
-- never migrated has no such table: the caller reads UndefinedTable as "not installed".
SELECT version_num FROM outbox_alembic_version;

-- name: schema_installed
-- Whether the outbox schema exists, for a role that may not read the version
-- table (the least-privilege roles of sql/roles.sql): needs no privilege at all.
SELECT to_regnamespace('outbox') IS NOT NULL AS installed;
