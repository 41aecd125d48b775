-- Rate limits: token buckets shared by every worker on every host.
--
-- Installed by migration 0002 (migrations/versions/0002_rate_limits.py).
--
-- A DBA configures limits in outbox.rate_limits; the buckets' state lives in
-- outbox.rate_buckets and is changed only by outbox.take_tokens, under row
-- locks, so the limits hold whatever the number of workers. The worker asks
-- through outbox.admit (sql/admit.sql), once per claimed batch that a limit
-- applies to.
--
-- The bucket arithmetic is the same as the pure function outbox.schedule.take
-- (its docstring states the rules; tests/integration/test_ratelimit.py checks
-- this SQL against it on random sequences, to the microsecond):
--   1. refill: elapsed = now - updated_at in whole microseconds, never negative;
--      tokens = least(burst, greatest(0, tokens) + elapsed / 1e6 * rate);
--      updated_at = greatest(updated_at, now);
--   2. one token available: take it;
--   3. otherwise take nothing; the wait is the smallest whole number of
--      microseconds after which rule 1 yields one token (plus the time until
--      the clock is back at updated_at, if it went back).

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.rate_limits (
    scope            text NOT NULL
                     CONSTRAINT rate_limits_scope_known CHECK (scope IN ('provider', 'recipient', 'api_key')),
    name             text NOT NULL,
    rate_per_second  double precision NOT NULL
                     -- 1e-9/s is one token in ~32 years; 'NaN' and 'Infinity' fail the upper bound.
                     CONSTRAINT rate_limits_rate_positive_finite
                     CHECK (rate_per_second >= 1e-9 AND rate_per_second < 'Infinity'),
    burst            double precision NOT NULL
                     CONSTRAINT rate_limits_burst_at_least_one_finite
                     CHECK (burst >= 1 AND burst < 'Infinity'),
    description      text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name),
    CONSTRAINT rate_limits_recipient_name_is_channel
        CHECK (scope <> 'recipient' OR name IN ('email', 'sms', 'push')),
    CONSTRAINT rate_limits_provider_name_valid
        CHECK (scope <> 'provider' OR name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    CONSTRAINT rate_limits_api_key_name_valid
        CHECK (scope <> 'api_key' OR name = '*' OR name ~ '^[1-9][0-9]{0,18}$')
);
COMMENT ON TABLE outbox.rate_limits IS
    'Token-bucket limits a DBA edits; changes apply to the next claimed batch. Examples: '
    '(''provider'', ''twilio'', 100, 100) = 100 SMS/s to Twilio; '
    '(''recipient'', ''sms'', 3/3600.0, 3) = at most 3 SMS per hour to one person. '
    'Over-limit deliveries are deferred (next_attempt_at), never dropped, never counted as attempts.';
COMMENT ON COLUMN outbox.rate_limits.scope IS
    '''provider'': one bucket shared by every send through that provider; '
    '''recipient'': one bucket per recipient (email, sms) or per device (push) on that channel; '
    '''api_key'': one bucket per API key of `outbox api`, one token per request.';
COMMENT ON COLUMN outbox.rate_limits.name IS
    'For scope provider: the provider name (twilio, vonage, sendgrid, mailchimp, apns, fcm, console); '
    'for scope recipient: the channel (email, sms, push); '
    'for scope api_key: ''*'' (every key) or one key''s id (that key instead).';
COMMENT ON COLUMN outbox.rate_limits.rate_per_second IS
    'Refill rate in tokens per second (one token per delivery). 3 per hour = 3/3600.0.';
COMMENT ON COLUMN outbox.rate_limits.burst IS
    'Bucket capacity: the most deliveries that may go at once after a quiet period (>= 1).';
COMMENT ON COLUMN outbox.rate_limits.description IS 'Why this limit exists (contract, provider tier, policy).';
COMMENT ON COLUMN outbox.rate_limits.updated_at IS 'When the row was last changed (set by the DBA''s statement or the default).';

-- ---------------------------------------------------------------------------
-- fillfactor leaves room on each page so that the frequent updates of a hot
-- provider bucket stay HOT (no index churn).
CREATE TABLE outbox.rate_buckets (
    scope       text NOT NULL,
    name        text NOT NULL,
    subject     text NOT NULL,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, name, subject)
) WITH (fillfactor = 50);
COMMENT ON TABLE outbox.rate_buckets IS
    'State of each token bucket, written only by outbox.take_tokens. A missing row is a full bucket, '
    'so outbox.prune_rate_buckets may delete full ones at any time.';
COMMENT ON COLUMN outbox.rate_buckets.scope IS 'The limit''s scope (see outbox.rate_limits).';
COMMENT ON COLUMN outbox.rate_buckets.name IS 'The limit''s name (see outbox.rate_limits).';
COMMENT ON COLUMN outbox.rate_buckets.subject IS
    '''''  for a provider bucket; ''recipient:<id>'' or ''address:<email or number>'' for email and sms; '
    '''device:<md5 of the token>'' for push.';
COMMENT ON COLUMN outbox.rate_buckets.tokens IS 'Tokens left as of updated_at (refilled lazily on the next take).';
COMMENT ON COLUMN outbox.rate_buckets.updated_at IS
    'Instant the tokens were counted at; never moves backwards (a clock that goes back mints nothing).';

-- ---------------------------------------------------------------------------
-- outbox.token_wait_us: rule 3 of the bucket arithmetic.
CREATE FUNCTION outbox.token_wait_us(tokens double precision, rate double precision, n double precision)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_us bigint;
BEGIN
    v_us := greatest(1, ceil((n - tokens) / rate * 1000000)::bigint);
    -- The float estimate can be a microsecond off either way; settle on the exact
    -- smallest value, as outbox.schedule.take does, so both agree to the microsecond.
    WHILE NOT (tokens + (v_us::double precision / 1000000) * rate >= n) LOOP
        v_us := v_us + 1;
    END LOOP;
    WHILE v_us > 1 AND tokens + ((v_us - 1)::double precision / 1000000) * rate >= n LOOP
        v_us := v_us - 1;
    END LOOP;
    RETURN v_us;
END
$$;
COMMENT ON FUNCTION outbox.token_wait_us(double precision, double precision, double precision) IS
    'Smallest whole number of microseconds after which a bucket holding `tokens` refilled at `rate`/s holds n.';

-- ---------------------------------------------------------------------------
-- outbox.take_tokens: take one token per request from each of its buckets, or
-- none at all.
--
-- A request is one delivery; it names the buckets it needs by parallel arrays
-- (request number, scope, name, subject): a key whose (scope, name) has no row
-- in outbox.rate_limits is not limited. Requests are served in ascending
-- request number (the claim's priority order). A request gets its tokens only
-- if every one of its buckets has one; otherwise it takes nothing, and its
-- wait is the longest of its short buckets' waits. The k-th request refused
-- by one bucket in a call waits for the k-th token that bucket will mint, so
-- a batch deferred together does not wake up together.
--
-- Buckets are created full when first needed and locked in one fixed order,
-- so concurrent callers never deadlock: recipient buckets first, provider
-- buckets (the ones every worker wants) last, so those are held the shortest.
-- `at` replaces the clock (tests); by default it is clock_timestamp() once the
-- locks are held, so time never runs backwards between workers waiting on the
-- same bucket.
--
-- Returns one row per request: wait_seconds = 0 if granted, else the seconds
-- until it may be tried again, and the limit that held it ('provider:twilio').
CREATE FUNCTION outbox.take_tokens(
    requests  integer[],
    scopes    text[],
    names     text[],
    subjects  text[],
    at        timestamptz DEFAULT NULL
) RETURNS TABLE (request integer, wait_seconds double precision, limited_by text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    -- One slot per distinct configured bucket; the arrays share one order.
    k_scope    text[];
    k_name     text[];
    k_subject  text[];
    k_rate     double precision[];
    k_burst    double precision[];
    k_tokens   double precision[];
    k_start    timestamptz[];
    k_back_us  bigint[];
    k_denied   integer[];
    k_dirty    boolean[];
    v_now      timestamptz;
    v_count    integer;
    v_elapsed  bigint;
    v_ok       boolean;
    v_wait     bigint;
    v_w        bigint;
    v_by       text;
    i          integer;
    r          record;
BEGIN
    v_count := cardinality(requests);
    IF v_count IS DISTINCT FROM cardinality(scopes) OR v_count IS DISTINCT FROM cardinality(names)
       OR v_count IS DISTINCT FROM cardinality(subjects) THEN
        RAISE EXCEPTION 'outbox.take_tokens: requests, scopes, names and subjects must have the same length, got %, %, %, %',
            cardinality(requests), cardinality(scopes), cardinality(names), cardinality(subjects)
            USING ERRCODE = 'OB001', COLUMN = 'requests';
    END IF;

    -- Every aggregate of one SELECT sees the rows in the same order, so the
    -- arrays line up slot by slot without sorting them.
    SELECT array_agg(k.scope), array_agg(k.name), array_agg(k.subject),
           array_agg(l.rate_per_second), array_agg(l.burst)
    INTO k_scope, k_name, k_subject, k_rate, k_burst
    FROM (SELECT DISTINCT q.scope, q.name, coalesce(q.subject, '') AS subject
          FROM unnest(scopes, names, subjects) AS q(scope, name, subject)) k
    JOIN outbox.rate_limits l ON l.scope = k.scope AND l.name = k.name;

    IF k_scope IS NOT NULL THEN
        -- Create missing buckets full, and lock every bucket, in lock order (byte
        -- order, the same in every database). The conflict action never writes
        -- (WHERE false) but still locks the existing row, and if a concurrent prune
        -- deleted it, the insert is retried.
        INSERT INTO outbox.rate_buckets AS b (scope, name, subject, tokens, updated_at)
        SELECT k.scope, k.name, k.subject, k.burst, coalesce(at, clock_timestamp())
        FROM unnest(k_scope, k_name, k_subject, k_burst) AS k(scope, name, subject, burst)
        ORDER BY k.scope COLLATE "C" DESC, k.name COLLATE "C", k.subject COLLATE "C"
        ON CONFLICT (scope, name, subject) DO UPDATE SET tokens = b.tokens WHERE false;

        v_now := coalesce(at, clock_timestamp());

        -- Rule 1, once per bucket: every request of this call is served at v_now.
        SELECT array_agg(least(s.burst, greatest(0, b.tokens)
                               + (s.elapsed_us::double precision / 1000000) * s.rate) ORDER BY s.slot),
               array_agg(s.start ORDER BY s.slot),
               array_agg(s.back_us ORDER BY s.slot)
        INTO k_tokens, k_start, k_back_us
        FROM unnest(k_scope, k_name, k_subject, k_rate, k_burst) WITH ORDINALITY AS k(scope, name, subject, rate, burst, slot)
        JOIN outbox.rate_buckets b ON (b.scope, b.name, b.subject) = (k.scope, k.name, k.subject)
        CROSS JOIN LATERAL (
            SELECT k.slot, k.rate, k.burst, greatest(b.updated_at, v_now) AS start,
                   ((extract(epoch FROM greatest(b.updated_at, v_now)) - extract(epoch FROM b.updated_at))
                    * 1000000)::bigint AS elapsed_us,
                   ((extract(epoch FROM greatest(b.updated_at, v_now)) - extract(epoch FROM v_now))
                    * 1000000)::bigint AS back_us
        ) s;

        k_denied := array_fill(0, ARRAY[cardinality(k_scope)]);
        k_dirty := array_fill(false, ARRAY[cardinality(k_scope)]);
    END IF;

    FOR r IN
        SELECT q.request AS req,
               array_agg(DISTINCT k.slot) FILTER (WHERE k.slot IS NOT NULL) AS slots
        FROM unnest(requests, scopes, names, subjects) AS q(request, scope, name, subject)
        LEFT JOIN unnest(k_scope, k_name, k_subject) WITH ORDINALITY AS k(scope, name, subject, slot)
               ON k.scope = q.scope AND k.name = q.name AND k.subject = coalesce(q.subject, '')
        GROUP BY q.request
        ORDER BY q.request
    LOOP
        v_ok := true;
        FOREACH i IN ARRAY coalesce(r.slots, '{}') LOOP
            IF k_tokens[i] < 1 THEN
                v_ok := false;
            END IF;
        END LOOP;

        IF v_ok THEN
            -- Rule 2.
            FOREACH i IN ARRAY coalesce(r.slots, '{}') LOOP
                k_tokens[i] := k_tokens[i] - 1;
                k_dirty[i] := true;
            END LOOP;
            request := r.req; wait_seconds := 0; limited_by := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- Rule 3, for each bucket that is short; the others are left untouched.
        v_wait := 0;
        v_by := NULL;
        FOREACH i IN ARRAY r.slots LOOP
            CONTINUE WHEN k_tokens[i] >= 1;
            k_denied[i] := k_denied[i] + 1;
            k_dirty[i] := true;
            v_w := k_back_us[i] + outbox.token_wait_us(k_tokens[i], k_rate[i], k_denied[i]);
            IF v_w > v_wait THEN
                v_wait := v_w;
                v_by := k_scope[i] || ':' || k_name[i];
            END IF;
        END LOOP;
        request := r.req; wait_seconds := v_wait::double precision / 1000000; limited_by := v_by;
        RETURN NEXT;
    END LOOP;

    IF k_scope IS NOT NULL THEN
        UPDATE outbox.rate_buckets b
        SET tokens = u.tokens, updated_at = u.start
        FROM unnest(k_scope, k_name, k_subject, k_tokens, k_start, k_dirty)
             AS u(scope, name, subject, tokens, start, dirty)
        WHERE u.dirty AND (b.scope, b.name, b.subject) = (u.scope, u.name, u.subject);
    END IF;
END
$$;
COMMENT ON FUNCTION outbox.take_tokens(integer[], text[], text[], text[], timestamptz) IS
    'Take one token per request from each of its buckets (all or none), in request order; '
    'returns each request''s wait (0 = granted) and the limit that held it.';

-- ---------------------------------------------------------------------------
-- outbox.prune_rate_buckets: delete up to max_rows buckets that are full (or
-- whose limit was deleted). A full bucket behaves exactly like a missing one,
-- so nothing changes but the table's size: per-recipient buckets would
-- otherwise accumulate one row per person ever limited. Never waits for a
-- lock (SKIP LOCKED), so it is safe to call from anywhere, at any time.
CREATE FUNCTION outbox.prune_rate_buckets(max_rows integer DEFAULT 1000, at timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE sql
AS $$
    WITH doomed AS (
        SELECT b.scope, b.name, b.subject
        FROM outbox.rate_buckets b
        LEFT JOIN outbox.rate_limits l ON l.scope = b.scope AND l.name = b.name
        WHERE l.scope IS NULL
           OR (b.updated_at <= coalesce(at, clock_timestamp())
               AND greatest(0, b.tokens)
                   + extract(epoch FROM coalesce(at, clock_timestamp()) - b.updated_at)::double precision
                     * l.rate_per_second >= l.burst)
        LIMIT max_rows
        FOR UPDATE OF b SKIP LOCKED
    ), deleted AS (
        DELETE FROM outbox.rate_buckets b USING doomed d
        WHERE (b.scope, b.name, b.subject) = (d.scope, d.name, d.subject)
        RETURNING 1
    )
    SELECT count(*)::integer FROM deleted;
$$;
COMMENT ON FUNCTION outbox.prune_rate_buckets(integer, timestamptz) IS
    'Delete up to max_rows full (or orphaned) rate buckets without waiting for locks; returns how many.';
