-- The worker's queries: claim, record, recover, heartbeat, release.
-- Each is one statement, so each commits (or not) as a whole.

-- name: session
-- Run once on each worker connection as it opens. Every worker statement reads
-- rows by primary key or through the small partial indexes (due, in flight),
-- and those pages are in shared buffers: the claim, start mark and record touch
-- rows written a moment before. At the default random_page_cost (4, a disk's
-- seek) the planner prices a hundred primary-key lookups above one sequential
-- scan of the whole table while deliveries holds fewer than some 20,000 rows,
-- and joins a batch by scanning them all (the start mark and record filtered
-- 9,900 rows out of 10,000 for each batch of 100). 1.1 is the usual value for
-- cached or solid-state storage; a lower value a DBA set is kept.
-- %(generic)s is true for the connections of the claim, the start marks and the
-- record: their statements are written for the plan a prepared statement settles
-- on without the values (tests/integration/test_store.py checks those plans), so
-- they get it from their first execution. By default PostgreSQL plans the first
-- five executions with the values first, and psycopg prepares a statement only at
-- its sixth: a worker's first ten wake-ups or so each planned the claim anew (about
-- 1 ms) before it settled on the generic plan it then keeps. A plan_cache_mode a
-- DBA set (anything but auto) is kept.
SELECT set_config('random_page_cost',
                  least(current_setting('random_page_cost')::float8, 1.1)::text, false),
       CASE WHEN %(generic)s AND current_setting('plan_cache_mode') = 'auto'
            THEN set_config('plan_cache_mode', 'force_generic_plan', false) END;

-- name: claim
-- Claim up to %(limit)s due deliveries of the worker's channels, best priority
-- first, then oldest due. SKIP LOCKED: concurrent workers never block on or take
-- each other's rows. Claimed rows get a lease (owner + expiry) and attempts + 1;
-- that attempt number is the fencing token the worker must present to record a
-- result. Rows whose expires_at has passed are marked expired in the same
-- statement (the database's guard: an expired message is never sent); they come
-- back with status 'expired' and no template, so the worker counts and logs them.
-- Returns what the worker needs to render and send, including the template
-- version resolved along the recipient's locale chain (fr-CA -> fr -> default):
-- its id and content hash, not its text. Versions are immutable, so the worker
-- keeps their contents by id and asks (claimed_templates) only for those it has
-- not seen; a batch of 100 no longer carries 100 copies of the same subject, body
-- and HTML.
-- One row per delivery, columns in the order of workers/delivery.py's
-- ClaimedDelivery (the worker checks the names, then builds rows by position).
-- due_since (enqueued, or its scheduled send_at if later) is where the
-- end-to-end latency metric starts.
-- The admission re-check happens here too, so a batch costs one round trip:
-- blocked says why a delivery must not go after all (an opt-out made since
-- enqueue, which critical categories bypass; an address suppressed since, by a
-- hard bounce or a STOP; a push device deactivated since), else NULL; the
-- worker records those as suppressed. limited_channels / limited_providers
-- (the same on every row) name the configured rate limits: the worker calls
-- outbox.admit only for a batch one of them applies to.
-- A delivery whose cancel was requested is never pending (a CHECK constraint,
-- deliveries_cancel_requested_not_pending), so it is never claimed again.
-- The claim commits without waiting for its WAL to reach disk (synchronous_commit
-- off for this transaction only): nothing leaves the worker on the strength of a
-- claim alone. A send waits for its start mark's commit, which is durable, and
-- flushing that commit flushes all WAL before it, this claim's included. So a
-- claim lost in a server crash was never acted on: its rows are pending again,
-- and the start mark's fence (lease owner, attempt) refuses them. What the claim
-- saves is one disk flush before every send, on the path of an idle wake-up.
-- The setting is made in limits' one row (an aggregate has one however many rate
-- limits there are), which the result joins to every claimed row.
WITH limits AS MATERIALIZED (
    SELECT array_agg(l.name) FILTER (WHERE l.scope = 'recipient') AS channels,
           array_agg(l.name) FILTER (WHERE l.scope = 'provider') AS providers,
           set_config('synchronous_commit', 'off', true) AS async_commit
    FROM outbox.rate_limits l
), due AS (
    SELECT d.id
    FROM outbox.deliveries d
    WHERE d.status = 'pending'
      AND d.next_attempt_at <= now()
      AND d.channel = ANY (%(channels)s::outbox.channel[])
    ORDER BY d.priority DESC, d.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE outbox.deliveries d
    SET status           = CASE WHEN d.expires_at <= now() THEN 'expired' ELSE 'processing' END::outbox.delivery_status,
        attempts         = CASE WHEN d.expires_at <= now() THEN d.attempts ELSE d.attempts + 1 END,
        lease_owner      = CASE WHEN d.expires_at <= now() THEN NULL ELSE %(worker)s END,
        lease_expires_at = CASE WHEN d.expires_at <= now() THEN NULL
                                ELSE now() + %(lease_seconds)s * interval '1 second' END,
        last_error       = CASE WHEN d.expires_at <= now() THEN 'expired before it could be sent'
                                ELSE d.last_error END,
        finished_at      = CASE WHEN d.expires_at <= now() THEN now() END,
        updated_at       = now()
    -- By primary key (an array, not a join): the generic plan guesses that a
    -- LIMIT of a parameter takes a tenth of the backlog, and would hash-join
    -- that many rows against a scan of the whole table.
    WHERE d.id = ANY (ARRAY(SELECT due.id FROM due))
    RETURNING d.*
), logged AS (
    -- Only the expired get an event here: a claimed delivery's 'processing' event
    -- is written by the start statement, when (and only if) its provider call is
    -- about to begin.
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker)
    SELECT c.notification_id, c.id, 'expired', c.attempts, %(worker)s
    FROM claimed c
    WHERE c.status = 'expired'
)
SELECT c.id, c.notification_id, n.message_id, c.channel::text AS channel, c.destination,
       c.status::text AS status, c.attempts, c.max_attempts, c.priority, c.expires_at,
       greatest(n.created_at, n.send_at) AS due_since,
       n.data, n.template_key, n.recipient_id, coalesce(r.locale, 'default') AS locale,
       r.timezone, r.quiet_start, r.quiet_end, coalesce(cat.critical, false) AS critical,
       dev.platform AS device_platform, dev.environment AS device_environment,
       t.id AS template_id, t.version AS template_version, t.locale AS template_locale,
       t.content_hash,
       CASE
           WHEN s.reason IS NOT NULL THEN 'suppressed address: ' || s.reason
           WHEN dev.active IS FALSE THEN 'device deactivated: ' || coalesce(dev.deactivated_reason, 'no reason given')
           WHEN p.opted_in IS FALSE THEN
                'opted out of ' || c.channel || CASE WHEN p.category = '*' THEN '' ELSE ' ' || p.category END
       END AS blocked,
       lim.channels AS limited_channels, lim.providers AS limited_providers
FROM claimed c
CROSS JOIN limits lim
-- Each lookup is one index probe per claimed row (OFFSET 0 keeps it apart): for
-- the generic plan a claim may be a tenth of the backlog, and joined, the
-- lookups would hash whole tables (notifications, recipients) for it.
CROSS JOIN LATERAL (SELECT n.* FROM outbox.notifications n WHERE n.id = c.notification_id OFFSET 0) n
LEFT JOIN LATERAL (SELECT r.* FROM outbox.recipients r WHERE r.id = n.recipient_id OFFSET 0) r ON true
LEFT JOIN LATERAL (SELECT cat.critical FROM outbox.categories cat WHERE cat.name = n.category OFFSET 0) cat ON true
LEFT JOIN LATERAL (SELECT dev.* FROM outbox.devices dev WHERE dev.id = c.device_id OFFSET 0) dev ON true
LEFT JOIN LATERAL (SELECT s.reason FROM outbox.suppressions s
                   WHERE s.channel = c.channel AND s.destination = c.destination OFFSET 0) s ON true
-- The recipient's preference for this channel and category (an opt-out wins
-- over an opt-in, as at enqueue); critical categories and direct addresses do
-- not ask. The conditions that skip a lookup are inside the subquery, so a row
-- that needs none runs none (in a join's ON clause, the lookup would run for
-- every row and its result be discarded).
LEFT JOIN LATERAL (
    SELECT pr.opted_in, pr.category FROM outbox.preferences pr
    WHERE n.recipient_id IS NOT NULL AND NOT coalesce(cat.critical, false)
      AND pr.recipient_id = n.recipient_id AND pr.channel = c.channel
      AND pr.category IN ('*', coalesce(n.category, '*'))
    ORDER BY pr.opted_in, pr.category DESC
    LIMIT 1
) p ON true
-- Likewise, no template is looked up for a row expired at claim.
LEFT JOIN LATERAL (
    SELECT t.id, t.version, t.locale, t.content_hash
    FROM outbox.templates t
    WHERE c.status = 'processing'
      AND t.key = n.template_key AND t.channel = c.channel AND t.active
      AND t.locale IN (coalesce(r.locale, 'default'), split_part(coalesce(r.locale, 'default'), '-', 1), 'default')
    ORDER BY t.locale = coalesce(r.locale, 'default') DESC,
             t.locale = split_part(coalesce(r.locale, 'default'), '-', 1) DESC
    LIMIT 1
) t ON true
ORDER BY c.priority DESC, c.id;

-- name: claimed_templates
-- The template versions %(ids)s, whole: what a claim returned the id and content
-- hash of, for the worker to render with. A version's content never changes
-- (templates_immutable), so the worker keeps them and asks only for new ones.
SELECT t.id, t.key, t.channel::text AS channel, t.locale, t.version,
       t.subject, t.body, t.html_body, t.title, t.content_hash
FROM outbox.templates t
WHERE t.id = ANY (%(ids)s::bigint[]);

-- name: start
-- The provider calls of these deliveries (%(ids)s, at the attempts %(attempts)s
-- they were claimed at) are about to begin: write each one's 'processing' event.
-- The worker waits for this commit before any request leaves, so an attempt
-- with a 'processing' event is one that may have reached the provider, and one
-- without never did: lease recovery counts only the former as in doubt.
-- Fenced like record: only rows this worker still holds at that attempt; the
-- ids returned are those that may start (a send whose lease was lost since the
-- claim is not made). FOR KEY SHARE: lease recovery (FOR UPDATE SKIP LOCKED)
-- skips a row while its start is being written, and a recovery committed first
-- makes the row fail the fence here; so recovery never misses a start that
-- commits. The key-share lock does not conflict with the recorder's UPDATE.
-- Claimed deliveries that never start (deferred, suppressed, dead on render,
-- expired, cancelled) get no 'processing' event.
WITH s AS (
    SELECT d.id, d.notification_id, d.attempts
    FROM outbox.deliveries d
    JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS r(id, attempt)
      ON d.id = r.id AND d.attempts = r.attempt
    WHERE d.lease_owner = %(worker)s
    ORDER BY d.id
    FOR KEY SHARE OF d
), logged AS (
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker)
    SELECT s.notification_id, s.id, 'processing', s.attempts, %(worker)s FROM s
)
SELECT s.id FROM s;

-- name: record
-- Record a batch of results in one statement. A row is updated only if this
-- worker still holds its lease at that attempt (fencing): a worker that stalled
-- past its lease, whose row was recovered and claimed again, changes nothing.
-- Returns the ids that were recorded, with the event recorded for each (the
-- caller logs that one, and the others as dropped).
-- %(results)s is a JSON array with one object per result (absent keys are NULL):
--   id, attempt   the delivery and the attempt (fencing token) it was claimed at
--   status        sent | pending (retry, deferral, config pause) | dead | expired | suppressed
--   kind          the event: sent, retry, deferred, dead, expired, suppressed
--   delay         seconds from now (database time) until the next attempt, for pending
--   refund        1 when the attempt does not count (deferred, provider misconfigured)
--   in_doubt      1 when the provider may have accepted it anyway
--   provider, provider_message_id, error, template_id, detail (the event's jsonb)
-- A delivery whose cancel was requested while it was in flight (outbox.cancel,
-- cancel_requested_at) ends cancelled, whatever the result, unless it was sent:
-- a success stays sent (the provider had it), and its event says the cancel came
-- too late. The flag is read from the row this statement locks, so a cancel
-- committed while the result waited for the lock is seen.
WITH r AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(results)s::jsonb)
         AS r(id bigint, attempt integer, status outbox.delivery_status, kind text, delay float8,
              provider text, provider_message_id text, error text, template_id bigint,
              in_doubt integer, refund integer, detail jsonb)
), updated AS (
    UPDATE outbox.deliveries d
    SET status              = CASE WHEN d.cancel_requested_at IS NOT NULL AND r.status <> 'sent'
                                   THEN 'cancelled' ELSE r.status END,
        attempts            = d.attempts - coalesce(r.refund, 0),
        next_attempt_at     = CASE WHEN r.delay IS NULL OR d.cancel_requested_at IS NOT NULL
                                   THEN d.next_attempt_at
                                   ELSE now() + r.delay * interval '1 second' END,
        lease_owner         = NULL,
        lease_expires_at    = NULL,
        provider            = coalesce(r.provider, d.provider),
        provider_message_id = coalesce(r.provider_message_id, d.provider_message_id),
        last_error          = CASE WHEN d.cancel_requested_at IS NOT NULL AND r.status <> 'sent'
                                   THEN d.cancel_reason || coalesce('; the attempt in flight: ' || r.error, '')
                                   ELSE coalesce(r.error, d.last_error) END,
        template_id         = coalesce(r.template_id, d.template_id),
        in_doubt            = d.in_doubt + coalesce(r.in_doubt, 0),
        sent_at             = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
        finished_at         = CASE WHEN r.status = 'pending' AND d.cancel_requested_at IS NULL
                                   THEN NULL ELSE now() END,
        updated_at          = now()
    FROM r
    -- By primary key, one row per result. The fence: our lease at this attempt.
    -- A lease owner implies status 'processing' (a CHECK constraint), so the
    -- status is not repeated here: a plan that scanned every row in processing
    -- would cost more with every delivery in flight.
    WHERE d.id = r.id
      AND d.lease_owner = %(worker)s
      AND d.attempts = r.attempt
    RETURNING d.id, d.notification_id, r.attempt, d.status,
              CASE WHEN d.status = 'cancelled' THEN 'cancelled' ELSE r.kind END AS kind,
              CASE WHEN d.cancel_requested_at IS NULL THEN r.detail
                   WHEN d.status = 'cancelled'
                   THEN (coalesce(r.detail, '{}') - 'retry_in_seconds') || jsonb_strip_nulls(jsonb_build_object(
                            'reason', d.cancel_reason, 'cancel_requested_at', d.cancel_requested_at,
                            'instead_of', r.kind, 'error', r.error))
                   ELSE coalesce(r.detail, '{}') || jsonb_build_object(
                            'cancel_requested_at', d.cancel_requested_at,
                            'cancel', 'too late: the provider had accepted this attempt')
              END AS detail
), logged AS (
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
    SELECT u.notification_id, u.id, u.kind, u.attempt, %(worker)s, u.detail FROM updated u
)
SELECT u.id, u.kind FROM updated u;

-- name: deactivate_devices
-- Push tokens a provider reported dead: deactivate them, so no later
-- notification targets them.
WITH gone AS (
    UPDATE outbox.devices d
    SET active = false, deactivated_at = now(), deactivated_reason = r.reason
    FROM unnest(%(tokens)s::text[], %(reasons)s::text[]) AS r(token, reason)
    WHERE d.token = r.token AND d.active
    RETURNING d.id, d.token, d.deactivated_reason
)
INSERT INTO outbox.events (kind, worker, detail)
SELECT 'device_deactivated', %(worker)s, jsonb_build_object('device_id', g.id, 'reason', g.deactivated_reason)
FROM gone g;

-- name: suppress_destinations
-- Addresses and numbers a provider reported dead (hard bounce, invalid, STOP):
-- never send to them again.
INSERT INTO outbox.suppressions (channel, destination, reason)
SELECT r.channel, r.destination, r.reason
FROM unnest(%(channels)s::outbox.channel[], %(destinations)s::text[], %(reasons)s::text[])
     AS r(channel, destination, reason)
ON CONFLICT (channel, destination) DO NOTHING;

-- name: recover_leases
-- Deliveries whose lease expired (their worker died or hung) go back to
-- pending, or to dead if that was their last attempt, or to cancelled if their
-- cancel was requested while they were in flight. The attempt stays counted.
-- in_doubt grows only if the attempt started (its 'processing' event exists, see
-- the start query): then the dead worker may have sent it; a claim that died
-- before its provider call sent nothing.
WITH stale AS (
    SELECT d.id, d.lease_owner,
           -- Through events_notification: a notification has only a handful of events.
           EXISTS (SELECT 1 FROM outbox.events e
                   WHERE e.notification_id = d.notification_id AND e.delivery_id = d.id
                     AND e.kind = 'processing' AND e.attempt = d.attempts) AS started
    FROM outbox.deliveries d
    WHERE d.status = 'processing' AND d.lease_expires_at < now()
    ORDER BY d.lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
), recovered AS (
    UPDATE outbox.deliveries d
    SET status           = CASE WHEN d.cancel_requested_at IS NOT NULL THEN 'cancelled'
                                WHEN d.attempts >= d.max_attempts THEN 'dead'
                                ELSE 'pending' END::outbox.delivery_status,
        lease_owner      = NULL,
        lease_expires_at = NULL,
        next_attempt_at  = now(),
        in_doubt         = d.in_doubt + CASE WHEN s.started THEN 1 ELSE 0 END,
        last_error       = CASE WHEN d.cancel_requested_at IS NOT NULL THEN d.cancel_reason || '; ' ELSE '' END
                           || 'lease of ' || s.lease_owner || ' expired at attempt ' || d.attempts
                           || CASE WHEN d.cancel_requested_at IS NULL AND d.attempts >= d.max_attempts
                                   THEN ' (attempts exhausted)' ELSE '' END,
        finished_at      = CASE WHEN d.cancel_requested_at IS NOT NULL OR d.attempts >= d.max_attempts
                                THEN now() END,
        updated_at       = now()
    FROM stale s
    WHERE d.id = s.id
    RETURNING d.id, d.notification_id, d.attempts, d.status, s.lease_owner, d.cancel_reason, s.started
), logged AS (
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
    SELECT r.notification_id, r.id, CASE r.status WHEN 'pending' THEN 'recovered' ELSE r.status::text END,
           r.attempts, %(worker)s,
           jsonb_build_object('previous_owner', r.lease_owner, 'in_doubt', r.started)
           || CASE WHEN r.status = 'cancelled' THEN jsonb_build_object('reason', r.cancel_reason) ELSE '{}' END
    FROM recovered r
)
SELECT count(*) FILTER (WHERE r.status = 'pending') AS recovered,
       count(*) FILTER (WHERE r.status = 'dead') AS dead,
       count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled
FROM recovered r;

-- name: heartbeat
-- Extend the leases this worker still holds (long sends must not be recovered
-- from under it). SKIP LOCKED: a row locked right now is being recorded by
-- this same worker's recorder; waiting for it could deadlock the two.
UPDATE outbox.deliveries d
SET lease_expires_at = now() + %(lease_seconds)s * interval '1 second'
FROM (
    SELECT x.id FROM outbox.deliveries x
    WHERE x.id = ANY (%(ids)s::bigint[]) AND x.status = 'processing' AND x.lease_owner = %(worker)s
    ORDER BY x.id
    FOR UPDATE SKIP LOCKED
) held
WHERE d.id = held.id;

-- name: release
-- Give back deliveries this worker claimed but will not finish (shutdown).
-- Not started: the attempt is refunded. Interrupted mid-send: the attempt
-- counts and in_doubt grows, because the provider may have accepted it.
-- One whose cancel was requested while it was held ends cancelled instead.
WITH r AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(started)s::boolean[])
         AS r(id, attempt, started)
), released AS (
    UPDATE outbox.deliveries d
    SET status = CASE WHEN d.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      ELSE 'pending' END::outbox.delivery_status,
        lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = now(),
        attempts = d.attempts - CASE WHEN r.started THEN 0 ELSE 1 END,
        in_doubt = d.in_doubt + CASE WHEN r.started THEN 1 ELSE 0 END,
        last_error = CASE WHEN d.cancel_requested_at IS NOT NULL THEN d.cancel_reason ELSE d.last_error END,
        finished_at = CASE WHEN d.cancel_requested_at IS NOT NULL THEN now() END,
        updated_at = now()
    FROM r
    WHERE d.id = r.id AND d.status = 'processing' AND d.lease_owner = %(worker)s AND d.attempts = r.attempt
    RETURNING d.id, d.notification_id, d.attempts, d.status, d.cancel_reason, r.started
)
INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
SELECT x.notification_id, x.id, CASE x.status WHEN 'cancelled' THEN 'cancelled' ELSE 'released' END,
       x.attempts, %(worker)s,
       jsonb_build_object('interrupted', x.started)
       || CASE WHEN x.status = 'cancelled' THEN jsonb_build_object('reason', x.cancel_reason) ELSE '{}' END
FROM released x;

-- name: wake_listen
-- The channel the enqueue trigger notifies on commit.
LISTEN outbox_work;

-- name: cancel_listen
-- The channel outbox.cancel notifies on commit when it asked deliveries in flight
-- to stop (the payload is the notification id): a send not started yet is not made.
LISTEN outbox_cancel;
