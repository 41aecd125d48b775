-- outbox.admit as migration 0002 installed it (superseded by sql/admit.sql in
-- migration 0005, which moved the send-time opt-out/suppression re-check into
-- the claim). Kept so that 0002 installs, and 0005's downgrade restores,
-- exactly what that revision had. Not the current SQL: see sql/admit.sql.

-- ---------------------------------------------------------------------------
-- outbox.admit: the worker's one call per claimed batch, after its own quiet-
-- hours check. For each delivery (parallel arrays, in claim order):
--
--   1. re-checks at send time what enqueue checked: an opt-out made since
--      (critical categories bypass it), an address suppressed since (a hard
--      bounce, a STOP reply), a push device deactivated since -> 'suppressed';
--   2. takes rate-limit tokens for the rest: the provider that will send
--      (providers[i], NULL = none known) and the recipient x channel bucket
--      -> 'deferred' with the seconds to wait.
--
-- Returns only the deliveries that may not go now: (id, verdict, wait_seconds,
-- reason). Every other delivery may be sent. Every rate limit applies to
-- critical categories too: a provider's cap is the provider's, and a per-person
-- cap is what stops SMS pumping through login codes.
--
-- Call it in a transaction of its own, as the worker does: its commit does not
-- wait for the WAL flush (SET LOCAL synchronous_commit = off), so the provider
-- buckets' locks, which every worker waits for, are released a flush sooner.
-- The bucket state is soft: the worker's next durable commit (recording the
-- batch) flushes it anyway, and a server crash before that could only forget
-- the last fraction of a second of takes, letting that many tokens go again.
CREATE FUNCTION outbox.admit(
    ids            bigint[],
    recipient_ids  bigint[],
    channels       text[],
    categories     text[],
    critical       boolean[],
    destinations   text[],
    providers      text[],
    at             timestamptz DEFAULT NULL,
    prune_limit    integer DEFAULT 0
) RETURNS TABLE (id bigint, verdict text, wait_seconds double precision, reason text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_count    integer := cardinality(ids);
BEGIN
    IF v_count IS DISTINCT FROM cardinality(recipient_ids) OR v_count IS DISTINCT FROM cardinality(channels)
       OR v_count IS DISTINCT FROM cardinality(categories) OR v_count IS DISTINCT FROM cardinality(critical)
       OR v_count IS DISTINCT FROM cardinality(destinations) OR v_count IS DISTINCT FROM cardinality(providers) THEN
        RAISE EXCEPTION 'outbox.admit: every array must have one element per delivery (% ids)', v_count
            USING ERRCODE = 'OB001', COLUMN = 'ids';
    END IF;

    RETURN QUERY
    WITH q AS (
        SELECT * FROM unnest(ids, recipient_ids, channels, categories, critical, destinations)
               WITH ORDINALITY AS q(id, recipient_id, channel, category, critical, destination, ord)
    ), judged AS (
        SELECT q.ord, q.id,
               CASE
                   WHEN s.reason IS NOT NULL THEN 'suppressed address: ' || s.reason
                   WHEN dev.active IS FALSE THEN 'device deactivated: ' || coalesce(dev.deactivated_reason, 'no reason given')
                   WHEN NOT coalesce(q.critical, false) AND p.opted_in IS FALSE THEN
                        'opted out of ' || q.channel || CASE WHEN p.category = '*' THEN '' ELSE ' ' || p.category END
               END AS why
        FROM q
        LEFT JOIN outbox.suppressions s
               ON s.channel = q.channel::outbox.channel AND s.destination = q.destination
        LEFT JOIN outbox.devices dev
               ON q.channel = 'push' AND dev.token = q.destination
        LEFT JOIN LATERAL (
            SELECT pr.opted_in, pr.category FROM outbox.preferences pr
            WHERE pr.recipient_id = q.recipient_id AND pr.channel = q.channel::outbox.channel
              AND pr.category IN ('*', coalesce(q.category, '*'))
            ORDER BY pr.opted_in, pr.category DESC  -- an opt-out wins over an opt-in, as at enqueue
            LIMIT 1
        ) p ON true
    ), keys AS (
        -- Two keys per delivery still to be admitted: its provider's and its own.
        SELECT j.ord::integer AS request, 'provider' AS scope, providers[j.ord] AS name, '' AS subject
        FROM judged j WHERE j.why IS NULL AND providers[j.ord] IS NOT NULL
        UNION ALL
        SELECT j.ord::integer, 'recipient', q.channel,
               CASE WHEN q.channel = 'push' THEN 'device:' || md5(q.destination)
                    WHEN q.recipient_id IS NOT NULL THEN 'recipient:' || q.recipient_id
                    ELSE 'address:' || q.destination END
        FROM judged j JOIN q ON q.ord = j.ord WHERE j.why IS NULL
    ), taken AS (
        SELECT t.*
        FROM (SELECT array_agg(k.request) AS requests, array_agg(k.scope) AS scopes,
                     array_agg(k.name) AS names, array_agg(k.subject) AS subjects
              FROM keys k) a
        CROSS JOIN LATERAL outbox.take_tokens(a.requests, a.scopes, a.names, a.subjects, at) t
        WHERE a.requests IS NOT NULL
    )
    SELECT j.id, 'suppressed'::text, NULL::double precision, j.why
    FROM judged j WHERE j.why IS NOT NULL
    UNION ALL
    SELECT q.id, 'deferred'::text, t.wait_seconds, t.limited_by
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
COMMENT ON FUNCTION outbox.admit(bigint[], bigint[], text[], text[], boolean[], text[], text[], timestamptz, integer) IS
    'Per claimed batch: suppress deliveries opted out / suppressed / deactivated since enqueue, and take '
    'rate-limit tokens for the rest; returns the deliveries that may not go now, with why and for how long.';
