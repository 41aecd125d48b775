-- The worker's rate-limit check (workers/gate.py): one statement per claimed
-- batch that a configured limit applies to.

-- name: admit
-- Take rate-limit tokens (provider and recipient x channel buckets) for the
-- claimed deliveries that passed the other checks (parallel arrays, in claim
-- order). Returns only the deliveries that may not go now: id, wait_seconds,
-- limited_by (the limit that held it, e.g. 'provider:twilio').
-- %(prune_limit)s > 0 also deletes that many full buckets (never waiting).
SELECT a.id, a.wait_seconds, a.limited_by
FROM outbox.admit(
    ids => %(ids)s::bigint[], recipient_ids => %(recipient_ids)s::bigint[],
    channels => %(channels)s::text[], destinations => %(destinations)s::text[],
    providers => %(providers)s::text[], prune_limit => %(prune_limit)s::integer) AS a;
