-- Revision 0013: topics, subscriptions and broadcasts (sql/schema.sql at 0013).
--
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
