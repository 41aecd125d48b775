-- First start of the compose PostgreSQL (docker-entrypoint-initdb.d): the roles
-- of a least-privilege deployment. Demo passwords: change them for anything real.
--
--   outbox_owner   owns the schema and runs `outbox migrate`; not a superuser, so
--                  the SECURITY DEFINER functions it owns (producer, retention)
--                  can do no more than it can.
--   outbox_producer, outbox_worker, outbox_webhooks, outbox_reader, outbox_api
--                  the group roles migrations 0003, 0009 and 0011 grant to
--                  (sql/roles.sql, sql/api_roles.sql). Made here, so the owner
--                  needs no CREATEROLE.
--   outbox_app     an application (enqueue/register only)      -> outbox_producer
--   outbox_svc     the workers                                   -> outbox_worker
--   outbox_hooks   the webhook receiver (internet-facing)        -> outbox_webhooks
--   outbox_api_svc the HTTP API (`outbox api`)                   -> outbox_api
--   grafana        dashboards                                    -> outbox_reader
--
-- The group roles belong to the whole server: a member of outbox_producer is a
-- producer in every database with Outbox it may connect to. So only these
-- logins may connect to this one (docs/operations.md, "One server, several
-- applications").

CREATE ROLE outbox_owner LOGIN PASSWORD 'outbox_owner';
ALTER DATABASE outbox OWNER TO outbox_owner;

CREATE ROLE outbox_producer NOLOGIN;
CREATE ROLE outbox_worker NOLOGIN;
CREATE ROLE outbox_webhooks NOLOGIN;
CREATE ROLE outbox_reader NOLOGIN;
CREATE ROLE outbox_api NOLOGIN;

CREATE ROLE outbox_app LOGIN PASSWORD 'outbox_app' IN ROLE outbox_producer;
CREATE ROLE outbox_svc LOGIN PASSWORD 'outbox_svc' IN ROLE outbox_worker;
CREATE ROLE outbox_hooks LOGIN PASSWORD 'outbox_hooks' IN ROLE outbox_webhooks;
CREATE ROLE outbox_api_svc LOGIN PASSWORD 'outbox_api_svc' IN ROLE outbox_api;
CREATE ROLE grafana LOGIN PASSWORD 'grafana' IN ROLE outbox_reader;
-- pg_stat_activity shows other sessions' queries only to pg_read_all_stats members.
GRANT pg_monitor TO grafana;

REVOKE CONNECT ON DATABASE outbox FROM PUBLIC;
GRANT CONNECT ON DATABASE outbox TO outbox_owner, outbox_app, outbox_svc, outbox_hooks, grafana;
