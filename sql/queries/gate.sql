-- The worker's admission check (workers/gate.py): one statement per claimed batch.

-- name: admit
-- For the claimed deliveries that passed the quiet-hours check (parallel arrays,
-- in claim order): suppress those opted out / suppressed / deactivated since
-- enqueue, take rate-limit tokens for the others (provider and recipient x
-- channel buckets). Returns only the deliveries that may not go now:
-- id, verdict ('suppressed' | 'deferred'), wait_seconds, reason (the
-- suppression reason, or the limit that held it, e.g. 'provider:twilio').
-- %(prune_limit)s > 0 also deletes that many full buckets (never waiting).
SELECT a.id, a.verdict, a.wait_seconds, a.reason
FROM outbox.admit(
    ids => %(ids)s::bigint[], recipient_ids => %(recipient_ids)s::bigint[],
    channels => %(channels)s::text[], categories => %(categories)s::text[],
    critical => %(critical)s::boolean[], destinations => %(destinations)s::text[],
    providers => %(providers)s::text[], prune_limit => %(prune_limit)s::integer) AS a;
