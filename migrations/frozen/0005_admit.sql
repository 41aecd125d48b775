-- outbox.admit: rate limits for a claimed batch. Installed by migration 0005
-- (migrations/versions/0005_admit_rate_limits_only.py).
--
-- The worker calls it once per claimed batch, after its own quiet-hours check,
-- and only when outbox.rate_limits holds a limit that applies to the batch (the
-- claim statement says so): with no limits configured a batch costs no extra
-- round trip. The send-time re-check of opt-outs, suppressions and deactivated
-- devices is not here any more: the claim statement does it (sql/queries/worker.sql).
--
-- For each delivery (parallel arrays, in claim order) it takes a token from the
-- provider's bucket (providers[i], NULL = none known) and from the recipient x
-- channel bucket. Returns only the deliveries that may not go now:
-- (id, wait_seconds, limited_by), e.g. (42, 0.35, 'provider:twilio'). Every
-- other delivery may be sent. Every rate limit applies to critical categories
-- too: a provider's cap is the provider's, and a per-person cap is what stops
-- SMS pumping through login codes.
--
-- Call it in a transaction of its own, as the worker does: its commit does not
-- wait for the WAL flush (SET LOCAL synchronous_commit = off), so the provider
-- buckets' locks, which every worker waits for, are released a flush sooner.
-- The bucket state is soft: the worker's next durable commit (recording the
-- batch) flushes it anyway, and a server crash before that could only forget
-- the last fraction of a second of takes, letting that many tokens go again.
CREATE OR REPLACE FUNCTION outbox.admit(
    ids            bigint[],
    recipient_ids  bigint[],
    channels       text[],
    destinations   text[],
    providers      text[],
    at             timestamptz DEFAULT NULL,
    prune_limit    integer DEFAULT 0
) RETURNS TABLE (id bigint, wait_seconds double precision, limited_by text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_count    integer := cardinality(ids);
BEGIN
    IF v_count IS DISTINCT FROM cardinality(recipient_ids) OR v_count IS DISTINCT FROM cardinality(channels)
       OR v_count IS DISTINCT FROM cardinality(destinations) OR v_count IS DISTINCT FROM cardinality(providers) THEN
        RAISE EXCEPTION 'outbox.admit: every array must have one element per delivery (% ids)', v_count
            USING ERRCODE = 'OB001', COLUMN = 'ids';
    END IF;

    RETURN QUERY
    WITH q AS (
        SELECT * FROM unnest(ids, recipient_ids, channels, destinations, providers)
               WITH ORDINALITY AS q(id, recipient_id, channel, destination, provider, ord)
    ), keys AS (
        -- Two keys per delivery: its provider's and its own.
        SELECT q.ord::integer AS request, 'provider' AS scope, q.provider AS name, '' AS subject
        FROM q WHERE q.provider IS NOT NULL
        UNION ALL
        SELECT q.ord::integer, 'recipient', q.channel,
               CASE WHEN q.channel = 'push' THEN 'device:' || md5(q.destination)
                    WHEN q.recipient_id IS NOT NULL THEN 'recipient:' || q.recipient_id
                    ELSE 'address:' || q.destination END
        FROM q
    ), taken AS (
        SELECT t.*
        FROM (SELECT array_agg(k.request) AS requests, array_agg(k.scope) AS scopes,
                     array_agg(k.name) AS names, array_agg(k.subject) AS subjects
              FROM keys k) a
        CROSS JOIN LATERAL outbox.take_tokens(a.requests, a.scopes, a.names, a.subjects, at) t
        WHERE a.requests IS NOT NULL
    )
    SELECT q.id, t.wait_seconds, t.limited_by
    FROM taken t JOIN q ON q.ord = t.request
    WHERE t.wait_seconds > 0;

    PERFORM set_config('synchronous_commit', 'off', true);

    IF prune_limit > 0 THEN
        -- After the takes: this call already holds its own buckets' locks, and the
        -- prune never waits, so no lock-order cycle can form.
        PERFORM outbox.prune_rate_buckets(prune_limit, at);
    END IF;
END
$$;
COMMENT ON FUNCTION outbox.admit(bigint[], bigint[], text[], text[], text[], timestamptz, integer) IS
    'Per claimed batch a rate limit applies to: take provider and recipient tokens; returns the '
    'deliveries that may not go now, with how long to wait and which limit held them.';
