-- SQL of benchmarks/gate.py, run only in that benchmark's own database.

-- name: gate_reset
-- The same backlog again: every delivery pending and due, its trail back to
-- 'created', no bucket state, no limits.
WITH deliveries AS (
    UPDATE outbox.deliveries
    SET status = 'pending', attempts = 0, next_attempt_at = now() - interval '1 second',
        lease_owner = NULL, lease_expires_at = NULL, provider = NULL, provider_message_id = NULL,
        template_id = NULL, last_error = NULL, sent_at = NULL, finished_at = NULL, updated_at = now()
    RETURNING 1
), events AS (
    DELETE FROM outbox.events WHERE kind <> 'created' RETURNING 1
), buckets AS (
    DELETE FROM outbox.rate_buckets RETURNING 1
), limits AS (
    DELETE FROM outbox.rate_limits RETURNING 1
)
SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM events),
       (SELECT count(*) FROM buckets), (SELECT count(*) FROM limits);

-- name: gate_set_limits
-- The variant's limits, among two set so high that nothing is ever deferred:
-- every batch still takes from the one provider bucket (every worker shares
-- it) and from one bucket per recipient.
INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst, description)
SELECT l.scope, l.name, 1e6, 1e6, l.description
FROM (VALUES ('provider', 'bench', 'benchmark: one bucket every batch takes from'),
             ('recipient', 'sms', 'benchmark: one bucket per recipient')) AS l(scope, name, description)
WHERE l.scope = ANY (%(scopes)s::text[]);

-- name: gate_vacuum
-- After a reset: the same table state for every run.
VACUUM ANALYZE outbox.deliveries, outbox.events, outbox.rate_buckets;

-- name: gate_listen
-- A worker loop waits here for the go signal (all loops start together).
LISTEN bench_gate_go;

-- name: gate_go
NOTIFY bench_gate_go;
