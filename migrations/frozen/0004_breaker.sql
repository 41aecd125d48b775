-- Provider circuit breakers: one row per provider, shared by every worker on every host.
--
-- Installed by migration 0004 (migrations/versions/0004_provider_breakers.py).
--
-- The rules are those of the pure module outbox/providers/breaker.py (its
-- docstring draws the state diagram); tests/integration/test_breaker.py runs
-- this SQL and that module on the same random histories and compares them.
-- In short:
--   closed     N consecutive transient failures (retry, unknown), or one config
--              outcome -> open for cooldown(1);
--   open       skipped by the router until retry_at; results of sends already in
--              flight change nothing;
--   half_open  after retry_at ONE worker claims the probe (for probe_seconds) and
--              sends one message; its success -> closed, its failure -> open for
--              cooldown(trips + 1);
--   cooldown(trips) = least(cap, base * 2^(trips - 1)).
--
-- Workers change rows only through the two functions below: outbox.breaker_record
-- once per recorded batch (results aggregated per provider), outbox.breaker_refresh
-- every ~1 s (claims due probes, returns every row). Rows appear the first time
-- a provider fails; a provider without a row is closed.
-- Times are the database's (now()): every host sees the same clock.
--
-- A DBA may close a breaker by hand (the next failure is counted from zero):
--   UPDATE outbox.provider_breakers
--   SET state = 'closed', failures = 0, trips = 0, opened_at = NULL, retry_at = NULL,
--       probe_owner = NULL, probe_expires_at = NULL, updated_at = now()
--   WHERE provider = 'sendgrid';

CREATE TYPE outbox.breaker_state AS ENUM ('closed', 'open', 'half_open');
COMMENT ON TYPE outbox.breaker_state IS
    'closed: traffic flows; open: skipped until retry_at; half_open: one worker sends one probe message.';

CREATE TABLE outbox.provider_breakers (
    provider          text PRIMARY KEY
                      CONSTRAINT provider_breakers_provider_valid
                      CHECK (provider ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    state             outbox.breaker_state NOT NULL DEFAULT 'closed',
    failures          integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    trips             integer NOT NULL DEFAULT 0 CHECK (trips >= 0),
    opened_at         timestamptz,
    retry_at          timestamptz,
    reason            text,
    probe_owner       text,
    probe_expires_at  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT provider_breakers_open_has_times
        CHECK (state = 'closed' OR (opened_at IS NOT NULL AND retry_at IS NOT NULL AND trips >= 1)),
    CONSTRAINT provider_breakers_probe_iff_half_open
        CHECK ((state = 'half_open') = (probe_owner IS NOT NULL AND probe_expires_at IS NOT NULL))
);
COMMENT ON TABLE outbox.provider_breakers IS
    'Circuit breaker per provider, shared by all workers (rules: sql/breaker.sql, docs/providers.md). '
    'While a provider is open the workers route its channel to the next provider of the list, '
    'or defer the deliveries without counting an attempt. No row = closed.';
COMMENT ON COLUMN outbox.provider_breakers.provider IS
    'Provider name as configured (sendgrid, mailchimp, twilio, vonage, apns, fcm, ...).';
COMMENT ON COLUMN outbox.provider_breakers.state IS
    'closed, open (skipped until retry_at) or half_open (probe_owner may send one probe message).';
COMMENT ON COLUMN outbox.provider_breakers.failures IS
    'Consecutive transient failures (retry, unknown outcomes) counted while closed; '
    'kept while open to show how it opened.';
COMMENT ON COLUMN outbox.provider_breakers.trips IS
    'Openings since it was last closed; the cool-down doubles with each (up to the cap). 0 when closed.';
COMMENT ON COLUMN outbox.provider_breakers.opened_at IS 'When it last opened (NULL when closed).';
COMMENT ON COLUMN outbox.provider_breakers.retry_at IS
    'When the cool-down ends and a worker may claim the probe (NULL when closed).';
COMMENT ON COLUMN outbox.provider_breakers.reason IS
    'The last failure''s reason, as the adapter classified it (secret-free); why it opened. '
    'Kept after it closes.';
COMMENT ON COLUMN outbox.provider_breakers.probe_owner IS
    'half_open only: the worker id allowed to send the one probe message.';
COMMENT ON COLUMN outbox.provider_breakers.probe_expires_at IS
    'half_open only: when another worker may claim the probe (the owner died or had no traffic).';

-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.breaker_record(
    p_worker            text,
    p_providers         text[],
    p_successes         integer[],
    p_failures          integer[],
    p_configs           integer[],
    p_reasons           text[],
    p_threshold         integer,
    p_cooldown_seconds  double precision,
    p_cooldown_cap_seconds double precision,
    p_now               timestamptz DEFAULT now()
)
RETURNS TABLE (provider text, previous outbox.breaker_state, state outbox.breaker_state,
               failures integer, trips integer, reason text, probe_owner text,
               retry_in_seconds double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r        record;
    b        outbox.provider_breakers;
    old      outbox.breaker_state;
    n_fail   integer;
    n_trips  integer;
    n_reason text;
    opening  boolean;
    closing  boolean;
BEGIN
    -- A row is created the first time a provider fails; successes alone need none.
    INSERT INTO outbox.provider_breakers AS pb (provider)
    SELECT t.p FROM unnest(p_providers, p_failures, p_configs) AS t(p, f, c)
    WHERE t.f > 0 OR t.c > 0
    ORDER BY t.p
    ON CONFLICT (provider) DO NOTHING;

    -- One provider at a time, in name order, so concurrent batches never deadlock.
    FOR r IN
        SELECT * FROM unnest(p_providers, p_successes, p_failures, p_configs, p_reasons)
                 AS t(provider, successes, failures, configs, reason)
        ORDER BY t.provider
    LOOP
        SELECT * INTO b FROM outbox.provider_breakers pb WHERE pb.provider = r.provider FOR UPDATE;
        IF NOT FOUND THEN
            CONTINUE;  -- closed, never failed, and these were successes: nothing to keep
        END IF;
        old := b.state; n_fail := b.failures; n_trips := b.trips; n_reason := b.reason;
        opening := false; closing := false;

        IF b.state = 'closed' THEN
            IF r.configs > 0 THEN
                opening := true; n_trips := 1;
            ELSE
                n_fail := CASE WHEN r.successes > 0 THEN r.failures ELSE b.failures + r.failures END;
                IF n_fail >= p_threshold THEN
                    opening := true; n_trips := 1;
                END IF;
            END IF;
            n_reason := coalesce(r.reason, b.reason);
        ELSIF b.state = 'half_open' AND b.probe_owner = p_worker THEN
            -- The probe's worker: its results decide.
            IF r.failures > 0 OR r.configs > 0 THEN
                opening := true; n_trips := b.trips + 1;
                n_reason := coalesce(r.reason, b.reason);
            ELSIF r.successes > 0 THEN
                closing := true;
            END IF;
        END IF;
        -- Otherwise (open, or someone else's probe) these are results of sends that
        -- began before it opened: they say nothing new and the row stays as it is.

        IF opening THEN
            UPDATE outbox.provider_breakers pb
            SET state = 'open', failures = n_fail, trips = n_trips, opened_at = p_now,
                retry_at = p_now + least(p_cooldown_cap_seconds,
                                         p_cooldown_seconds * 2.0::float8 ^ least(n_trips - 1, 30))
                                   * interval '1 second',
                reason = n_reason, probe_owner = NULL, probe_expires_at = NULL, updated_at = now()
            WHERE pb.provider = r.provider
            RETURNING pb.* INTO b;
        ELSIF closing THEN
            UPDATE outbox.provider_breakers pb
            SET state = 'closed', failures = 0, trips = 0, opened_at = NULL, retry_at = NULL,
                probe_owner = NULL, probe_expires_at = NULL, updated_at = now()
            WHERE pb.provider = r.provider
            RETURNING pb.* INTO b;
        ELSIF n_fail IS DISTINCT FROM b.failures OR n_reason IS DISTINCT FROM b.reason THEN
            UPDATE outbox.provider_breakers pb
            SET failures = n_fail, reason = n_reason, updated_at = now()
            WHERE pb.provider = r.provider
            RETURNING pb.* INTO b;
        END IF;

        provider := r.provider;
        previous := old;
        state := b.state;
        failures := b.failures;
        trips := b.trips;
        reason := b.reason;
        probe_owner := b.probe_owner;
        retry_in_seconds := extract(epoch FROM CASE b.state WHEN 'open' THEN b.retry_at
                                                            WHEN 'half_open' THEN b.probe_expires_at
                                                END - p_now);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION outbox.breaker_record(text, text[], integer[], integer[], integer[], text[],
                                          integer, double precision, double precision, timestamptz) IS
    'Apply one recorded batch''s results (aggregated per provider: successes, trailing transient '
    'failures, config outcomes, last reason) to the breakers; return each provider''s row before '
    '(previous) and after. Called by workers once per batch; p_now is for tests.';

-- ---------------------------------------------------------------------------
CREATE FUNCTION outbox.breaker_refresh(
    p_worker         text,
    p_providers      text[],
    p_probe_seconds  double precision,
    p_now            timestamptz DEFAULT now()
)
RETURNS TABLE (provider text, previous outbox.breaker_state, state outbox.breaker_state,
               failures integer, trips integer, reason text, probe_owner text,
               retry_in_seconds double precision, claimed boolean)
LANGUAGE sql AS $$
    -- Claim the probe of every due provider of p_providers for p_worker: open past
    -- retry_at, or half_open whose probe claim expired. SKIP LOCKED: a row being
    -- recorded right now is looked at again on the next refresh, a second later,
    -- rather than holding up the worker's housekeeping.
    WITH due AS (
        SELECT pb.provider, pb.state
        FROM outbox.provider_breakers pb
        WHERE pb.provider = ANY (p_providers)
          AND ((pb.state = 'open' AND pb.retry_at <= p_now)
               OR (pb.state = 'half_open' AND pb.probe_expires_at <= p_now))
        ORDER BY pb.provider
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE outbox.provider_breakers pb
        SET state = 'half_open', probe_owner = p_worker,
            probe_expires_at = p_now + p_probe_seconds * interval '1 second', updated_at = now()
        FROM due
        WHERE pb.provider = due.provider
        RETURNING pb.*, due.state AS previous
    )
    SELECT c.provider, c.previous, c.state, c.failures, c.trips, c.reason, c.probe_owner,
           extract(epoch FROM c.probe_expires_at - p_now)::float8, true
    FROM claimed c
    UNION ALL
    SELECT pb.provider, pb.state, pb.state, pb.failures, pb.trips, pb.reason, pb.probe_owner,
           extract(epoch FROM CASE pb.state WHEN 'open' THEN pb.retry_at
                                            WHEN 'half_open' THEN pb.probe_expires_at END - p_now)::float8,
           false
    FROM outbox.provider_breakers pb
    WHERE pb.provider = ANY (p_providers)
      AND NOT EXISTS (SELECT 1 FROM claimed c WHERE c.provider = pb.provider)
    ORDER BY 1
$$;
COMMENT ON FUNCTION outbox.breaker_refresh(text, text[], double precision, timestamptz) IS
    'A worker''s view of the breakers of p_providers, claiming for p_worker the probe of each '
    'provider whose cool-down has passed (claimed = true on those rows). Called every ~1 s.';
