-- Outbox schema: tables, constraints, indexes, triggers, comments.
--
-- Installed by the initial alembic migration (migrations/versions/0001_initial.py).
-- Functions live in sql/functions/, DBA views in sql/views.sql.
--
-- The database guards its own invariants: a status outside the enum, a negative
-- attempt count, a second active template version, a malformed phone number or a
-- processing row without a lease cannot be written, whatever the code does.

CREATE SCHEMA IF NOT EXISTS outbox;
COMMENT ON SCHEMA outbox IS 'Outbox: transactional notifications (push, SMS, email). See docs/operations.md.';

CREATE TYPE outbox.channel AS ENUM ('email', 'sms', 'push');
COMMENT ON TYPE outbox.channel IS 'Delivery channel: email, sms or push (APNs/FCM).';

CREATE TYPE outbox.delivery_status AS ENUM (
    'pending',     -- waiting for next_attempt_at, then claimable
    'processing',  -- claimed by a worker holding a lease
    'sent',        -- accepted by the provider
    'delivered',   -- the provider's receipt says it arrived
    'dead',        -- permanent failure or attempts exhausted: the dead-letter queue
    'cancelled',   -- cancelled by the application (an attempt in flight then did not succeed)
    'expired',     -- expires_at passed before it could be sent
    'suppressed'   -- opted out, suppressed address, or no destination
);
COMMENT ON TYPE outbox.delivery_status IS
    'pending -> processing -> sent -> delivered; processing -> pending (retry); -> dead | cancelled | expired | suppressed (terminal).';

-- ---------------------------------------------------------------------------
-- Per-channel configuration a DBA may edit.
CREATE TABLE outbox.channel_config (
    channel      outbox.channel PRIMARY KEY,
    max_attempts integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100)
);
INSERT INTO outbox.channel_config VALUES ('email', 8), ('sms', 5), ('push', 5);
COMMENT ON TABLE outbox.channel_config IS 'Per-channel defaults applied at enqueue time. Editable by a DBA.';
COMMENT ON COLUMN outbox.channel_config.max_attempts IS 'Attempts before a delivery of this channel goes to dead (copied onto each delivery).';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.recipients (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id  text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 255),
    email        text CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' AND length(email) <= 254),
    phone        text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    locale       text NOT NULL DEFAULT 'default'
                 CHECK (locale = 'default' OR locale ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    timezone     text NOT NULL DEFAULT 'UTC',
    quiet_start  time,
    quiet_end    time,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);
COMMENT ON TABLE outbox.recipients IS 'People notifications go to, keyed by the application''s own user id.';
COMMENT ON COLUMN outbox.recipients.external_id IS 'The application''s user id (what enqueue(recipient => ...) names).';
COMMENT ON COLUMN outbox.recipients.email IS 'Email address, or NULL if the recipient has none.';
COMMENT ON COLUMN outbox.recipients.phone IS 'Mobile number in E.164 form (+14155550123), or NULL.';
COMMENT ON COLUMN outbox.recipients.locale IS 'BCP 47 language tag (fr-CA) used to pick template versions; ''default'' if unknown.';
COMMENT ON COLUMN outbox.recipients.timezone IS 'IANA time zone (Europe/Paris) for quiet hours.';
COMMENT ON COLUMN outbox.recipients.quiet_start IS 'Start of the local quiet-hours window (non-critical sends wait), or NULL.';
COMMENT ON COLUMN outbox.recipients.quiet_end IS 'End of the local quiet-hours window; may be earlier than quiet_start (wraps midnight).';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.devices (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient_id        bigint NOT NULL REFERENCES outbox.recipients (id) ON DELETE CASCADE,
    platform            text NOT NULL CHECK (platform IN ('apns', 'fcm')),
    token               text NOT NULL UNIQUE CHECK (length(token) BETWEEN 8 AND 4096),
    environment         text NOT NULL DEFAULT 'production' CHECK (environment IN ('production', 'sandbox')),
    active              boolean NOT NULL DEFAULT true,
    deactivated_at      timestamptz,
    deactivated_reason  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    registered_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (active = (deactivated_at IS NULL))
);
CREATE INDEX devices_active_by_recipient ON outbox.devices (recipient_id) WHERE active;
COMMENT ON TABLE outbox.devices IS 'Push tokens (APNs, FCM). A token a provider reports dead is deactivated, never deleted.';
COMMENT ON COLUMN outbox.devices.platform IS 'apns (iOS) or fcm (Android/web).';
COMMENT ON COLUMN outbox.devices.token IS 'Provider device token; unique: re-registering it moves it to the new recipient.';
COMMENT ON COLUMN outbox.devices.environment IS 'APNs environment the token was issued for: production or sandbox.';
COMMENT ON COLUMN outbox.devices.active IS 'false once deactivated (provider said unregistered, or the app deactivated it).';
COMMENT ON COLUMN outbox.devices.deactivated_reason IS 'Why it was deactivated, e.g. "apns: Unregistered".';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.categories (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    critical     boolean NOT NULL DEFAULT false,
    description  text
);
COMMENT ON TABLE outbox.categories IS 'Notification categories. Critical ones (login codes, security alerts) bypass opt-outs and quiet hours.';

CREATE TABLE outbox.preferences (
    recipient_id  bigint NOT NULL REFERENCES outbox.recipients (id) ON DELETE CASCADE,
    channel       outbox.channel NOT NULL,
    category      text NOT NULL DEFAULT '*',
    opted_in      boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient_id, channel, category)
);
COMMENT ON TABLE outbox.preferences IS 'Per recipient, channel and category: opted in or out. No row = opted in.';
COMMENT ON COLUMN outbox.preferences.category IS 'A category name, or ''*'' for every category on that channel.';

CREATE TABLE outbox.suppressions (
    channel      outbox.channel NOT NULL,
    destination  text NOT NULL,
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, destination)
);
COMMENT ON TABLE outbox.suppressions IS 'Addresses and numbers never to send to again (hard bounce, spam report, STOP reply, invalid number).';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.templates (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key           text NOT NULL CHECK (key ~ '^[a-z0-9][a-z0-9_.-]{0,127}$'),
    channel       outbox.channel NOT NULL,
    locale        text NOT NULL DEFAULT 'default'
                  CHECK (locale = 'default' OR locale ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    version       integer NOT NULL CHECK (version >= 1),
    subject       text,
    body          text NOT NULL,
    html_body     text,
    title         text,
    content_hash  text NOT NULL,
    active        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (key, channel, locale, version),
    CHECK (channel = 'email' OR (subject IS NULL AND html_body IS NULL)),
    CHECK (channel = 'push' OR title IS NULL)
);
-- At most one active version per (key, channel, locale).
CREATE UNIQUE INDEX templates_one_active ON outbox.templates (key, channel, locale) WHERE active;
COMMENT ON TABLE outbox.templates IS 'Template versions. Content is immutable; exactly one version per (key, channel, locale) is active.';
COMMENT ON COLUMN outbox.templates.locale IS 'BCP 47 tag, or ''default''. Rendering falls back fr-CA -> fr -> default.';
COMMENT ON COLUMN outbox.templates.subject IS 'Email subject (Jinja2).';
COMMENT ON COLUMN outbox.templates.body IS 'Text body (Jinja2): email text part, SMS text, push body.';
COMMENT ON COLUMN outbox.templates.html_body IS 'Email HTML body (Jinja2, autoescaped).';
COMMENT ON COLUMN outbox.templates.title IS 'Push title (Jinja2).';
COMMENT ON COLUMN outbox.templates.content_hash IS 'sha256 of the content: a push of unchanged content creates no new version.';
COMMENT ON COLUMN outbox.templates.active IS 'The version used for new sends. Rolling back activates an older version.';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.notifications (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    text NOT NULL UNIQUE CHECK (length(message_id) BETWEEN 1 AND 255),
    recipient_id  bigint REFERENCES outbox.recipients (id) ON DELETE SET NULL,
    address       text,
    template_key  text NOT NULL,
    data          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    category      text,
    priority      smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    channels      outbox.channel[] NOT NULL,
    send_at       timestamptz,
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox.notifications IS 'What the application asked for. message_id is the idempotency key.';
COMMENT ON COLUMN outbox.notifications.message_id IS 'Idempotency key chosen by the application: enqueueing it again is a no-op.';
COMMENT ON COLUMN outbox.notifications.address IS 'A direct email address or E.164 number, when sent without a recipient.';
COMMENT ON COLUMN outbox.notifications.data IS 'Template variables (a JSON object).';
COMMENT ON COLUMN outbox.notifications.priority IS 'Higher is claimed first (-100..100). Login codes high, marketing low.';
COMMENT ON COLUMN outbox.notifications.send_at IS 'Not before this time (scheduled send), or NULL for now.';
COMMENT ON COLUMN outbox.notifications.expires_at IS 'Not after this time: undelivered deliveries become expired.';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.deliveries (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id      bigint NOT NULL REFERENCES outbox.notifications (id) ON DELETE CASCADE,
    channel              outbox.channel NOT NULL,
    destination          text NOT NULL,
    device_id            bigint REFERENCES outbox.devices (id) ON DELETE SET NULL,
    status               outbox.delivery_status NOT NULL DEFAULT 'pending',
    priority             smallint NOT NULL DEFAULT 0,
    attempts             integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts         integer NOT NULL CHECK (max_attempts >= 1),
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    lease_owner          text,
    lease_expires_at     timestamptz,
    provider             text,
    provider_message_id  text,
    -- No foreign key: its check locked the template row every delivery of a blast
    -- shares on each record (a MultiXact per record transaction of two workers).
    -- Versions are never deleted (templates_never_deleted) and their ids never
    -- change (template_immutable); the record writes the id its claim read.
    template_id          bigint,
    last_error           text,
    in_doubt             integer NOT NULL DEFAULT 0 CHECK (in_doubt >= 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    delivered_at         timestamptz,
    finished_at          timestamptz,
    cancel_requested_at  timestamptz,
    cancel_reason        text,
    UNIQUE (notification_id, channel, destination),
    CHECK (attempts <= max_attempts),
    -- A processing row always has a lease; no other status has one.
    CHECK ((status = 'processing') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- Every terminal failure carries its reason.
    CHECK (status NOT IN ('dead', 'expired', 'suppressed', 'cancelled') OR last_error IS NOT NULL),
    CHECK (status NOT IN ('sent', 'delivered') OR sent_at IS NOT NULL),
    -- A delivery whose cancel was requested never becomes claimable again: every
    -- path back to pending (a retry, lease recovery, release, requeue) ends it
    -- cancelled instead, and this refuses any path that does not.
    CONSTRAINT deliveries_cancel_requested_not_pending
        CHECK (status <> 'pending' OR cancel_requested_at IS NULL),
    CONSTRAINT deliveries_cancel_requested_has_reason
        CHECK ((cancel_requested_at IS NULL) = (cancel_reason IS NULL))
);
-- The claim query's index: due pending rows, best priority first. Finished rows
-- are not in it, so the claim's cost does not grow with history.
CREATE INDEX deliveries_due ON outbox.deliveries (priority DESC, next_attempt_at) WHERE status = 'pending';
-- Lease recovery scans only in-flight rows.
CREATE INDEX deliveries_leases ON outbox.deliveries (lease_expires_at) WHERE status = 'processing';
-- Dead-letter listing and purging.
CREATE INDEX deliveries_dead ON outbox.deliveries (finished_at) WHERE status = 'dead';
-- Delivery receipts arrive with the provider's message id.
CREATE INDEX deliveries_provider_message ON outbox.deliveries (provider_message_id) WHERE provider_message_id IS NOT NULL;
COMMENT ON TABLE outbox.deliveries IS 'The queue: one row per destination (device, address, number) of a notification.';
COMMENT ON COLUMN outbox.deliveries.destination IS 'Email address, E.164 number or device token ('''' when suppressed for lack of one).';
COMMENT ON COLUMN outbox.deliveries.status IS 'pending, processing, sent, delivered, dead, cancelled, expired, suppressed.';
COMMENT ON COLUMN outbox.deliveries.priority IS 'Copied from the notification so the claim reads one table.';
COMMENT ON COLUMN outbox.deliveries.attempts IS 'Attempts started. Incremented at claim; it is also the fencing token a worker must match to record a result.';
COMMENT ON COLUMN outbox.deliveries.max_attempts IS 'After this many attempts a retryable failure goes to dead.';
COMMENT ON COLUMN outbox.deliveries.next_attempt_at IS 'Not claimable before this time (send_at, backoff, rate-limit or quiet-hours deferral).';
COMMENT ON COLUMN outbox.deliveries.lease_owner IS 'Worker id holding the claim while processing.';
COMMENT ON COLUMN outbox.deliveries.lease_expires_at IS 'After this the lease is void and any worker returns the row to pending.';
COMMENT ON COLUMN outbox.deliveries.provider IS 'Provider that last handled it (sendgrid, twilio, apns, ...).';
COMMENT ON COLUMN outbox.deliveries.provider_message_id IS 'The provider''s id for the sent message (receipts are matched on it).';
COMMENT ON COLUMN outbox.deliveries.template_id IS
    'The exact template version rendered for this delivery (no foreign key: versions are never deleted, see templates_never_deleted).';
COMMENT ON COLUMN outbox.deliveries.last_error IS 'Reason of the last failure, or why it is dead/expired/suppressed/cancelled.';
COMMENT ON COLUMN outbox.deliveries.in_doubt IS 'Attempts whose outcome was unknown (timeout after sending, lease lost mid-send): possible duplicates.';
COMMENT ON COLUMN outbox.deliveries.finished_at IS 'When it reached a terminal status.';
COMMENT ON COLUMN outbox.deliveries.cancel_requested_at IS 'When outbox.cancel was called while it was in flight (processing): its attempt may reach the provider, but it is never retried.';
COMMENT ON COLUMN outbox.deliveries.cancel_reason IS 'The reason given to that outbox.cancel; it becomes last_error if the attempt in flight does not succeed.';

-- ---------------------------------------------------------------------------
CREATE TABLE outbox.events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint,
    delivery_id      bigint,
    kind             text NOT NULL CHECK (kind IN (
                         'created', 'processing', 'sent', 'delivered', 'retry', 'dead',
                         'expired', 'cancelled', 'suppressed', 'released', 'recovered',
                         'deferred', 'requeued', 'receipt', 'device_deactivated',
                         'template_activated', 'cancel_requested', 'erased')),
    attempt          integer,
    worker           text,
    detail           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Foreign keys are left out on purpose: events are written on the hot path and
-- outlive pruned deliveries only until the same prune removes them.
CREATE INDEX events_notification ON outbox.events (notification_id);
CREATE INDEX events_created ON outbox.events USING brin (created_at);
-- Providers repeat webhooks: a receipt event with the same provider event id is
-- recorded once (the insert of a repeat conflicts and changes nothing).
CREATE UNIQUE INDEX events_receipt_once ON outbox.events ((detail ->> 'provider'), (detail ->> 'event_id'))
    WHERE kind = 'receipt';
COMMENT ON TABLE outbox.events IS 'Append-only audit trail of every delivery transition. Rows are never updated.';
COMMENT ON COLUMN outbox.events.kind IS 'created, processing, sent, delivered, retry, dead, expired, cancelled, cancel_requested, suppressed, released, recovered, deferred, requeued, receipt, ...';
COMMENT ON COLUMN outbox.events.attempt IS 'The delivery''s attempt number when it happened.';
COMMENT ON COLUMN outbox.events.worker IS 'Worker id (or ''cli:<user>'', ''webhook:<provider>'') that caused it.';
COMMENT ON COLUMN outbox.events.detail IS 'Provider response summary, reason, etc. Never secrets; never message bodies.';

CREATE FUNCTION outbox.forbid_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outbox.% is append-only', TG_TABLE_NAME USING ERRCODE = 'OB005';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE ON outbox.events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.forbid_update();

-- Template content and id are immutable; only the active flag may change.
CREATE FUNCTION outbox.template_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.key, NEW.channel, NEW.locale, NEW.version, NEW.subject, NEW.body, NEW.html_body,
        NEW.title, NEW.content_hash)
       IS DISTINCT FROM
       (OLD.id, OLD.key, OLD.channel, OLD.locale, OLD.version, OLD.subject, OLD.body, OLD.html_body,
        OLD.title, OLD.content_hash) THEN
        RAISE EXCEPTION 'template versions are immutable: create a new version of % instead', OLD.key
            USING ERRCODE = 'OB005';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER templates_immutable BEFORE UPDATE ON outbox.templates
    FOR EACH ROW EXECUTE FUNCTION outbox.template_immutable();

-- Versions are never deleted: deliveries.template_id names the one each delivery
-- was rendered from, and has no foreign key (migration 0016). Deactivate a
-- version by activating another one.
CREATE FUNCTION outbox.forbid_template_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'template versions are never deleted (deliveries name the version they were rendered from): activate another version instead'
        USING ERRCODE = 'OB005';
END $$;
COMMENT ON FUNCTION outbox.forbid_template_delete() IS
    'Refuses DELETE and TRUNCATE on outbox.templates: deliveries.template_id relies on versions staying.';
CREATE TRIGGER templates_never_deleted BEFORE DELETE OR TRUNCATE ON outbox.templates
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.forbid_template_delete();

-- Wake workers on commit. A statement-level trigger sends at most one NOTIFY per
-- statement, and PostgreSQL folds identical notifications of one transaction into
-- one, so a transaction enqueueing a thousand deliveries notifies once.
CREATE FUNCTION outbox.notify_workers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Bulk loaders may turn the wake-up off (SET LOCAL outbox.notify = 'off');
    -- the workers' poll then finds the rows.
    IF coalesce(current_setting('outbox.notify', true), 'on') <> 'off' THEN
        PERFORM pg_notify('outbox_work', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_notify AFTER INSERT ON outbox.deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_workers();

-- ---------------------------------------------------------------------------
-- Topics, subscriptions and broadcasts (migration 0013; sql/functions/broadcast.sql).
--
-- A topic is a list recipients subscribe to ('newsletter', 'outage-eu'). A
-- subscription is a row; unsubscribing deletes it. Nothing is kept of a past
-- subscription on purpose: the table is exactly who a broadcast to the topic
-- reaches, an erased recipient leaves no trace in it (ON DELETE CASCADE), and
-- what a person does not want to receive is said by preferences (an opt-out of
-- a channel or category), which broadcasts honour like every enqueue.
CREATE TABLE outbox.topics (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    description  text CHECK (length(description) <= 1000),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox.topics IS 'Topics recipients subscribe to; outbox.broadcast sends to every subscriber of one.';
COMMENT ON COLUMN outbox.topics.name IS 'Topic name used by subscribe and broadcast (lowercase letters, digits, _ . -; at most 64).';
COMMENT ON COLUMN outbox.topics.description IS 'What the topic is for, or NULL.';
COMMENT ON COLUMN outbox.topics.created_at IS 'When the topic was created.';

CREATE TABLE outbox.subscriptions (
    topic_id      bigint NOT NULL REFERENCES outbox.topics (id) ON DELETE CASCADE,
    recipient_id  bigint NOT NULL REFERENCES outbox.recipients (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- (topic, recipient) order is the order a broadcast walks a topic in, chunk by
    -- chunk of recipient ids.
    PRIMARY KEY (topic_id, recipient_id)
);
-- A recipient's topics, and the cascade when a recipient is deleted.
CREATE INDEX subscriptions_recipient ON outbox.subscriptions (recipient_id);
COMMENT ON TABLE outbox.subscriptions IS 'Who is subscribed to which topic. Unsubscribing deletes the row.';
COMMENT ON COLUMN outbox.subscriptions.topic_id IS 'The topic.';
COMMENT ON COLUMN outbox.subscriptions.recipient_id IS 'The subscribed recipient.';
COMMENT ON COLUMN outbox.subscriptions.created_at IS 'When the recipient subscribed.';

-- A broadcast is what one outbox.broadcast call (and its reruns) asked for. Each
-- recipient it reaches gets a notification of its own, keyed by
-- (broadcast_id, recipient_id) and with the message id
-- '<broadcast message id>/<recipient id>', so that outbox inspect, timelines,
-- outbox.cancel and retention work on it as on any notification. Rerunning a
-- broadcast (after new subscribers joined, or after a crash between chunks)
-- inserts only the notifications not there yet: never twice for one recipient.
CREATE TABLE outbox.broadcasts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 200 leaves room for '/<recipient id>' within a notification's 255.
    message_id     text NOT NULL UNIQUE CHECK (length(message_id) BETWEEN 1 AND 200),
    topic_id       bigint REFERENCES outbox.topics (id) ON DELETE SET NULL,
    template_key   text NOT NULL,
    data           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    channels       outbox.channel[],
    category       text,
    priority       smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    send_at        timestamptz,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    cancelled_at   timestamptz,
    cancel_reason  text,
    CHECK ((cancelled_at IS NULL) = (cancel_reason IS NULL))
);
COMMENT ON TABLE outbox.broadcasts IS 'One row per broadcast message id: the content every recipient of it gets (the first call''s; reruns reuse it).';
COMMENT ON COLUMN outbox.broadcasts.message_id IS 'Idempotency key of the broadcast (1 to 200 characters); its notifications are ''<message_id>/<recipient id>''.';
COMMENT ON COLUMN outbox.broadcasts.topic_id IS 'The topic of the first call, or NULL for a broadcast to a segment or a list.';
COMMENT ON COLUMN outbox.broadcasts.template_key IS 'Template key of every notification of the broadcast.';
COMMENT ON COLUMN outbox.broadcasts.data IS 'Template variables (a JSON object), the same for every recipient.';
COMMENT ON COLUMN outbox.broadcasts.channels IS 'The channels asked for, or NULL: each recipient''s channels that the template has.';
COMMENT ON COLUMN outbox.broadcasts.category IS 'Category of every notification (preferences and critical bypass apply), or NULL.';
COMMENT ON COLUMN outbox.broadcasts.priority IS 'Priority of every notification (-100..100).';
COMMENT ON COLUMN outbox.broadcasts.send_at IS 'Not before this time, or NULL for now.';
COMMENT ON COLUMN outbox.broadcasts.expires_at IS 'Not after this time, or NULL.';
COMMENT ON COLUMN outbox.broadcasts.created_at IS 'When the first call was made.';
COMMENT ON COLUMN outbox.broadcasts.cancelled_at IS 'When outbox.cancel_broadcast was called: reruns enqueue nothing more.';
COMMENT ON COLUMN outbox.broadcasts.cancel_reason IS 'The reason given to outbox.cancel_broadcast.';

ALTER TABLE outbox.notifications ADD COLUMN broadcast_id bigint REFERENCES outbox.broadcasts (id);
COMMENT ON COLUMN outbox.notifications.broadcast_id IS 'The broadcast this notification is one recipient''s part of, or NULL.';
-- One notification per recipient of a broadcast; also how cancel_broadcast finds them.
CREATE UNIQUE INDEX notifications_broadcast_recipient ON outbox.notifications (broadcast_id, recipient_id)
    WHERE broadcast_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Remaining column comments, so that \d+ explains every column.
COMMENT ON COLUMN outbox.categories.name IS 'Category name used by enqueue(category => ...).';
COMMENT ON COLUMN outbox.categories.critical IS 'true: bypasses opt-outs and quiet hours (login codes, security alerts).';
COMMENT ON COLUMN outbox.categories.description IS 'What the category is for.';
COMMENT ON COLUMN outbox.channel_config.channel IS 'The channel these defaults apply to.';
COMMENT ON COLUMN outbox.deliveries.notification_id IS 'The notification this delivery belongs to.';
COMMENT ON COLUMN outbox.deliveries.channel IS 'email, sms or push.';
COMMENT ON COLUMN outbox.deliveries.device_id IS 'For push: the device the token belongs to.';
COMMENT ON COLUMN outbox.deliveries.expires_at IS 'Copied from the notification: not sent after this time.';
COMMENT ON COLUMN outbox.deliveries.sent_at IS 'When the provider accepted it.';
COMMENT ON COLUMN outbox.deliveries.delivered_at IS 'When a delivery receipt said it arrived.';
COMMENT ON COLUMN outbox.devices.recipient_id IS 'The recipient the token is registered to.';
COMMENT ON COLUMN outbox.devices.deactivated_at IS 'When it was deactivated (NULL while active).';
COMMENT ON COLUMN outbox.devices.registered_at IS 'When it was last (re-)registered.';
COMMENT ON COLUMN outbox.events.notification_id IS 'The notification concerned (NULL for template events).';
COMMENT ON COLUMN outbox.events.delivery_id IS 'The delivery concerned (NULL for notification- or template-level events).';
COMMENT ON COLUMN outbox.notifications.recipient_id IS 'The recipient, or NULL for a direct address.';
COMMENT ON COLUMN outbox.notifications.template_key IS 'Template key; the version is resolved at send time and recorded on each delivery.';
COMMENT ON COLUMN outbox.notifications.category IS 'Category (preferences and critical bypass apply to it), or NULL.';
COMMENT ON COLUMN outbox.notifications.channels IS 'The channels it was enqueued for.';
COMMENT ON COLUMN outbox.preferences.recipient_id IS 'The recipient whose preference this is.';
COMMENT ON COLUMN outbox.preferences.channel IS 'email, sms or push.';
COMMENT ON COLUMN outbox.preferences.opted_in IS 'false: deliveries of this channel and category are suppressed.';
COMMENT ON COLUMN outbox.suppressions.channel IS 'email or sms.';
COMMENT ON COLUMN outbox.suppressions.destination IS 'The suppressed email address or E.164 number.';
COMMENT ON COLUMN outbox.suppressions.reason IS 'Why, e.g. "sendgrid: bounce" or "twilio: 21610 STOP".';
COMMENT ON COLUMN outbox.templates.key IS 'Template name used by enqueue(template => ...).';
COMMENT ON COLUMN outbox.templates.channel IS 'email, sms or push.';
COMMENT ON COLUMN outbox.templates.version IS 'Version number, 1, 2, ... per (key, channel, locale).';
