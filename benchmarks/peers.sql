-- The peer job queues' tables (benchmarks/peers.py), read and reset between runs.
-- Each peer has a database of its own with only its own schema, installed by its
-- own API; these statements only empty its tables and read its own timestamps.

-- name: peer_sessions
-- Distinct worker processes of one peer (application_name prefix) with an idle session.
SELECT count(DISTINCT application_name)
FROM pg_stat_activity
WHERE datname = current_database()
  AND starts_with(application_name, %(prefix)s)
  AND state = 'idle';

-- name: pgqueuer_reset
TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics;

-- name: pgqueuer_drain_result
-- PgQueuer logs each job's 'picked' and final status with now() of the statement
-- (its statements are autocommit), so these are database times of the pick and
-- of the completion's commit.
SELECT
    count(*) FILTER (WHERE status = 'successful') AS done,
    count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')) AS not_done,
    extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))::float8 AS first_pick,
    extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))::float8 AS last_done
FROM pgqueuer_log;

-- name: procrastinate_reset
TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers;

-- name: procrastinate_drain_result
-- procrastinate's own triggers write an event per state change, at now().
SELECT
    count(*) FILTER (WHERE type = 'succeeded') AS done,
    count(*) FILTER (WHERE type IN ('failed', 'aborted', 'cancelled')) AS not_done,
    extract(epoch FROM min(at) FILTER (WHERE type = 'started'))::float8 AS first_pick,
    extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))::float8 AS last_done
FROM procrastinate_events;

-- name: pgqueuer_analyze
ANALYZE pgqueuer;

-- name: procrastinate_analyze
ANALYZE procrastinate_jobs;
