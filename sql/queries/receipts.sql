-- Delivery receipts from provider webhooks (outbox/webhooks/store.py is the only caller).
--
-- A receipt only ever moves a delivery forward: sent -> delivered, or
-- sent -> dead (bounce, undelivered, rejected); and pending -> delivered for
-- a retry of an attempt in doubt (see receipts_apply). A delivery in any other
-- status is left alone, so a repeated, late or out-of-order receipt changes nothing.
-- Every receipt is still recorded once, as an event of kind 'receipt'; the
-- unique index events_receipt_once (provider, event_id) makes repeats no-ops.

-- name: receipts_record
-- Record one webhook request's receipts, in one statement (one transaction):
--   1. match each receipt to its delivery: by our delivery id when the provider
--      echoed it back (SendGrid custom_args, Mandrill metadata, Vonage
--      client-ref) and that delivery is the provider's own (see named), else by
--      the provider's message id. This is the one place a receipt is matched:
--      receipts_apply is given the delivery found here;
--   2. insert the 'receipt' events; a receipt already recorded (same provider
--      and event id) conflicts and goes no further: it changes nothing else;
--   3. suppress dead addresses (hard bounce, drop, STOP), and record opt-outs
--      (spam report, unsubscribe, STOP) as a '*' preference of every recipient
--      with that address; an opted-out address no recipient owns is suppressed
--      instead, so the opt-out is honoured all the same.
-- The caller then moves the deliveries of the fresh terminal receipts forward
-- with receipts_apply, in the same transaction.
-- One row per receipt, in input order, says what happened to it.
--   action: delivered | dead | none (recorded only)
--   mismatch: channel | provider | notification | destination, when the delivery
--             the receipt names by our id is not the one it is about
WITH r AS (
    SELECT *
    FROM unnest(%(providers)s::text[], %(channels)s::outbox.channel[], %(event_ids)s::text[],
                %(statuses)s::text[], %(actions)s::text[], %(reasons)s::text[],
                %(suppress)s::boolean[], %(opt_outs)s::boolean[], %(delivery_ids)s::bigint[],
                %(notification_ids)s::bigint[], %(provider_message_ids)s::text[],
                %(addresses)s::text[], %(occurred_at)s::timestamptz[], %(details)s::jsonb[])
         WITH ORDINALITY
         AS r(provider, channel, event_id, status, action, reason, suppress, opt_out, delivery_id,
              notification_id, provider_message_id, address, occurred_at, detail, n)
), named AS (
    -- The delivery a receipt names by our id, and what about it disagrees with the
    -- receipt. Our ids travel in fields that anyone sending through the same provider
    -- account can set (SendGrid custom_args, Mandrill metadata, Vonage client-ref), and
    -- they are sequential: so the named delivery must be one this provider sent, on
    -- this channel, of the notification and to the address the event names, if it
    -- names them. Addresses compare trimmed and case-blind: deliveries keep them as
    -- the app wrote them, providers report them as they like (lower case, mostly).
    -- Until the worker records an attempt, the delivery's provider is not known (NULL
    -- on a first attempt, the last attempt's while another is in flight): a receipt
    -- that beats that record waits, and receipts_apply checks the provider again.
    SELECT r.n, d.id,
           CASE WHEN d.channel <> r.channel THEN 'channel'
                WHEN d.status <> 'processing' AND d.provider IS DISTINCT FROM r.provider
                    THEN 'provider'
                WHEN d.notification_id <> r.notification_id THEN 'notification'
                WHEN lower(d.destination) <> lower(btrim(r.address)) THEN 'destination'
           END AS mismatch
    FROM r JOIN outbox.deliveries d ON d.id = r.delivery_id
), matched AS (
    -- A mismatched receipt matches nothing and has no destination: it is recorded
    -- (with the mismatch), and it moves, suppresses and opts out nothing. A receipt
    -- naming an id no delivery has (pruned, or another system's) is only unmatched:
    -- its address still counts, as for any receipt we cannot place.
    SELECT r.*, d.id AS d_id, d.notification_id AS d_notification_id, d.status AS d_status,
           d.attempts AS d_attempts, nm.mismatch,
           CASE WHEN nm.mismatch IS NULL THEN coalesce(d.destination, r.address) END
               AS destination
    FROM r
    LEFT JOIN named nm ON nm.n = r.n
    LEFT JOIN LATERAL (
        -- Two arms, each served by an index (primary key; deliveries_provider_message).
        (SELECT d.id, d.notification_id, d.status, d.attempts, d.destination
         FROM outbox.deliveries d
         WHERE d.id = nm.id AND nm.mismatch IS NULL)
        UNION ALL
        (SELECT d.id, d.notification_id, d.status, d.attempts, d.destination
         FROM outbox.deliveries d
         WHERE r.delivery_id IS NULL
           AND d.provider_message_id = r.provider_message_id AND d.provider = r.provider
           AND d.channel = r.channel)
        LIMIT 1
    ) d ON true
), fresh AS (
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
    SELECT m.d_notification_id, m.d_id, 'receipt', m.d_attempts, 'webhook:' || m.provider,
           jsonb_strip_nulls(coalesce(m.detail, '{}') || jsonb_build_object(
               'provider', m.provider, 'event_id', m.event_id, 'status', m.status,
               'action', m.action, 'reason', m.reason,
               'provider_message_id', m.provider_message_id, 'matched', m.d_id IS NOT NULL,
               'mismatch', m.mismatch, 'occurred_at', m.occurred_at))
    FROM matched m
    ORDER BY m.n
    ON CONFLICT ((detail ->> 'provider'), (detail ->> 'event_id')) WHERE kind = 'receipt' DO NOTHING
    RETURNING detail ->> 'provider' AS provider, detail ->> 'event_id' AS event_id
), accepted AS (
    SELECT m.* FROM matched m JOIN fresh f ON f.provider = m.provider AND f.event_id = m.event_id
), owners AS (
    -- Recipients whose address an opt-out names (exact match: deliveries copy it verbatim).
    SELECT DISTINCT a.event_id, a.provider, rc.id AS recipient_id, a.channel
    FROM accepted a
    JOIN outbox.recipients rc
      ON (a.channel = 'email' AND rc.email = a.destination)
      OR (a.channel = 'sms' AND rc.phone = a.destination)
    WHERE a.opt_out
), opted_out AS (
    INSERT INTO outbox.preferences AS p (recipient_id, channel, category, opted_in)
    SELECT DISTINCT o.recipient_id, o.channel, '*', false FROM owners o
    ON CONFLICT (recipient_id, channel, category)
        DO UPDATE SET opted_in = false, updated_at = now()
        WHERE p.opted_in
    RETURNING p.recipient_id
), suppressed AS (
    INSERT INTO outbox.suppressions (channel, destination, reason)
    SELECT DISTINCT ON (a.channel, a.destination) a.channel, a.destination,
           coalesce(a.reason, a.provider || ': ' || a.status)
    FROM accepted a
    WHERE a.destination IS NOT NULL AND a.destination <> ''
      AND (a.suppress OR (a.opt_out AND NOT EXISTS (
               SELECT 1 FROM owners o WHERE o.provider = a.provider AND o.event_id = a.event_id)))
    ORDER BY a.channel, a.destination, a.n
    ON CONFLICT (channel, destination) DO NOTHING
    RETURNING channel, destination
)
SELECT m.provider, m.event_id, m.action, m.d_id AS delivery_id, n.message_id,
       m.channel::text AS channel, m.d_attempts AS attempt, m.d_status::text AS previous_status,
       m.mismatch, (f.event_id IS NOT NULL) AS fresh,
       (SELECT count(*) FROM suppressed) AS suppressions,
       (SELECT count(*) FROM opted_out) AS opt_outs
FROM matched m
LEFT JOIN fresh f ON f.provider = m.provider AND f.event_id = m.event_id
LEFT JOIN outbox.notifications n ON n.id = m.d_notification_id
ORDER BY m.n;

-- name: receipts_apply
-- Move deliveries forward on terminal receipts ('delivered' or 'dead'),
-- already recorded as events: right after receipts_record (%(late)s false), and
-- again later for those whose delivery was not 'sent' yet (%(late)s true): the
-- provider's receipt beat the worker's record of the send (still 'processing',
-- or no provider message id stored yet), or came for an attempt whose outcome
-- the worker could not know. The earliest receipt of each delivery wins, as if
-- they had come one by one. Only a 'sent' delivery moves, with one exception: a
-- delivery back in 'pending' after an attempt whose outcome was unknown (it
-- timed out after sending, in_doubt > 0), named by our own delivery id in a
-- 'delivered' receipt. The provider had that attempt, so the retry would be a
-- duplicate: it becomes 'delivered' instead. Each transition is logged.
WITH r AS (
    SELECT *
    FROM unnest(%(providers)s::text[], %(channels)s::outbox.channel[], %(event_ids)s::text[],
                %(statuses)s::text[], %(actions)s::text[], %(reasons)s::text[],
                %(delivery_ids)s::bigint[], %(named)s::boolean[],
                %(provider_message_ids)s::text[], %(occurred_at)s::timestamptz[])
         WITH ORDINALITY
         AS r(provider, channel, event_id, status, action, reason, delivery_id, named,
              provider_message_id, occurred_at, n)
), matched AS (
    -- delivery_id is the delivery receipts_record matched (the address, channel and
    -- notification checks are there); named says the receipt named it. The provider
    -- is checked again: a receipt that beat the worker's record was matched while
    -- the delivery's provider was not known yet. A receipt not matched yet by the
    -- provider's message id is looked up again by that id: the worker may have
    -- stored it since.
    SELECT r.*, d.id AS d_id, d.status AS d_status
    FROM r
    LEFT JOIN LATERAL (
        (SELECT d.id, d.status FROM outbox.deliveries d
         WHERE d.id = r.delivery_id AND d.channel = r.channel AND d.provider = r.provider)
        UNION ALL
        (SELECT d.id, d.status FROM outbox.deliveries d
         WHERE r.delivery_id IS NULL AND NOT r.named
           AND d.provider_message_id = r.provider_message_id AND d.provider = r.provider
           AND d.channel = r.channel)
        LIMIT 1
    ) d ON true
), winner AS (
    SELECT DISTINCT ON (m.d_id) m.*
    FROM matched m
    WHERE m.d_id IS NOT NULL AND m.action IN ('delivered', 'dead')
    ORDER BY m.d_id, m.occurred_at NULLS LAST, m.n
), moved AS (
    UPDATE outbox.deliveries d
    SET status       = w.action::outbox.delivery_status,
        -- The provider's time, kept between the send and now (clocks disagree).
        sent_at      = coalesce(d.sent_at, least(now(), coalesce(w.occurred_at, now()))),
        delivered_at = CASE WHEN w.action = 'delivered'
                            THEN greatest(d.sent_at, least(now(), coalesce(w.occurred_at, now())))
                            ELSE d.delivered_at END,
        provider     = coalesce(d.provider, w.provider),
        last_error   = CASE WHEN w.action = 'dead' THEN coalesce(w.reason, w.provider || ': ' || w.status)
                            ELSE d.last_error END,
        finished_at  = now(),
        updated_at   = now()
    FROM winner w
    WHERE d.id = w.d_id
      AND (d.status = 'sent'
           OR (d.status = 'pending' AND d.in_doubt > 0 AND w.action = 'delivered'
               AND w.named))
    RETURNING d.id, d.notification_id, d.attempts, d.last_error, w.provider, w.action, w.event_id,
              w.d_status AS previous_status
), logged AS (
    INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt, worker, detail)
    SELECT mv.notification_id, mv.id, mv.action, mv.attempts, 'webhook:' || mv.provider,
           jsonb_strip_nulls(jsonb_build_object(
               'provider', mv.provider, 'receipt', mv.event_id,
               'late', CASE WHEN %(late)s THEN true END,
               'retry_cancelled', CASE WHEN mv.previous_status = 'pending' THEN true END,
               'reason', CASE WHEN mv.action = 'dead' THEN mv.last_error END))
    FROM moved mv
)
-- held_status: the status of the delivery given in %(delivery_ids)s, matched or not.
-- One still in flight on its first attempt has no provider yet, so it matches
-- nothing; the caller keeps such a receipt waiting rather than forget it.
SELECT m.provider, m.event_id, m.d_id AS delivery_id, n.message_id, m.channel::text AS channel,
       mv.attempts AS attempt, m.d_status::text AS previous_status, (mv.id IS NOT NULL) AS moved,
       h.status::text AS held_status
FROM matched m
LEFT JOIN moved mv ON mv.id = m.d_id AND mv.event_id = m.event_id
LEFT JOIN outbox.deliveries d ON d.id = m.d_id
LEFT JOIN outbox.notifications n ON n.id = d.notification_id
LEFT JOIN outbox.deliveries h ON h.id = m.delivery_id
ORDER BY m.n;

-- name: webhooks_role
-- What the connected role may do, for the receiver's start-up check
-- (outbox/webhooks/store.py, check_role): one row per privilege, needed (receipts
-- fail without it: the privileges of outbox_webhooks, sql/roles.sql) or not (a
-- sample of what a broader role holds: the worker's, the owner's). Which events
-- a role may append is row security, not a privilege: not checked here.
SELECT current_user::text AS role, p.privilege, p.needed,
       CASE WHEN p.col IS NULL THEN has_table_privilege(p.object, p.priv)
            ELSE has_column_privilege(p.object, p.col, p.priv) END AS held
FROM (VALUES
    ('SELECT', 'outbox.deliveries', NULL, true),
    ('SELECT', 'outbox.notifications', 'message_id', true),
    ('SELECT', 'outbox.recipients', 'email', true),
    ('SELECT', 'outbox.recipients', 'phone', true),
    ('SELECT', 'outbox.events', 'detail', true),
    ('SELECT', 'outbox.preferences', NULL, true),
    ('SELECT', 'outbox.suppressions', NULL, true),
    ('UPDATE', 'outbox.deliveries', 'status', true),
    ('UPDATE', 'outbox.deliveries', 'sent_at', true),
    ('UPDATE', 'outbox.deliveries', 'delivered_at', true),
    ('UPDATE', 'outbox.deliveries', 'provider', true),
    ('UPDATE', 'outbox.deliveries', 'last_error', true),
    ('UPDATE', 'outbox.deliveries', 'finished_at', true),
    ('UPDATE', 'outbox.deliveries', 'updated_at', true),
    ('INSERT', 'outbox.events', NULL, true),
    ('INSERT', 'outbox.suppressions', NULL, true),
    ('INSERT', 'outbox.preferences', 'opted_in', true),
    ('UPDATE', 'outbox.preferences', 'opted_in', true),
    ('UPDATE', 'outbox.deliveries', 'destination', false),
    ('UPDATE', 'outbox.deliveries', 'lease_owner', false),
    ('UPDATE', 'outbox.devices', 'recipient_id', false),
    ('UPDATE', 'outbox.devices', 'active', false),
    ('SELECT', 'outbox.notifications', 'data', false),
    ('SELECT', 'outbox.templates', NULL, false),
    ('DELETE', 'outbox.events', NULL, false),
    ('DELETE', 'outbox.deliveries', NULL, false),
    ('DELETE', 'outbox.notifications', NULL, false)
) AS v(priv, object, col, needed)
CROSS JOIN LATERAL (
    SELECT v.priv, v.object, v.col, v.needed,
           v.priv || ' ' || v.object || coalesce(' (' || v.col || ')', '') AS privilege
) p
ORDER BY p.needed DESC, p.privilege;
