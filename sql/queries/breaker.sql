-- The workers' circuit breaker queries (workers/breaker/view.py asks for them,
-- workers/store.py runs them). The rules live in the functions of
-- sql/breaker.sql; each query here is one statement.

-- name: breaker_record
-- Apply one recorded batch's provider results, aggregated per provider (parallel
-- arrays): successes, transient failures after the batch's last success, config
-- outcomes, the last reason. Returns each provider's breaker before (previous)
-- and after; a provider without a row (never failed) returns nothing.
SELECT b.provider, b.previous::text AS previous, b.state::text AS state, b.failures, b.trips,
       b.reason, b.probe_owner, b.retry_in_seconds
FROM outbox.breaker_record(%(worker)s, %(providers)s::text[], %(successes)s::integer[],
                           %(failures)s::integer[], %(configs)s::integer[], %(reasons)s::text[],
                           %(threshold)s, %(cooldown_seconds)s, %(cooldown_cap_seconds)s) b;

-- name: breaker_refresh
-- The breakers of this worker's providers, claiming for it the probe of each one
-- whose cool-down has passed (claimed = true on those rows).
-- retry_in_seconds: until retry_at (open) or until the probe claim expires (half_open).
SELECT b.provider, b.previous::text AS previous, b.state::text AS state, b.failures, b.trips,
       b.reason, b.probe_owner, b.retry_in_seconds, b.claimed
FROM outbox.breaker_refresh(%(worker)s, %(providers)s::text[], %(probe_seconds)s) b;
