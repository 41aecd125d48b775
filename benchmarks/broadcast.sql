-- Queries of benchmarks/broadcast.py.

-- name: broadcast_setup
-- N recipients with an email address and a phone number, all subscribed to 'all';
-- a template for both channels; the plain one-table outbox the baseline fills.
WITH made AS (
    INSERT INTO outbox.recipients (external_id, email, phone)
    SELECT 'b' || g, 'b' || g || '@example.com', '+1415' || lpad(g::text, 7, '0')
    FROM generate_series(1, %(n)s) g
    RETURNING id
)
INSERT INTO outbox.subscriptions (topic_id, recipient_id)
SELECT (SELECT id FROM outbox.topics WHERE name = 'all'), m.id FROM made m;

-- name: broadcast_plain_table
CREATE TABLE bench_plain_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id text NOT NULL,
    destination text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, destination)
);
CREATE INDEX bench_plain_pending ON bench_plain_outbox (created_at) WHERE status = 'pending';

-- name: broadcast_topic_run
-- One broadcast to every subscriber of 'all', in one statement.
SELECT enqueued FROM outbox.broadcast(%(message_id)s, 'all', 'bench');

-- name: broadcast_core_run
-- The same notifications through the set-based enqueue core, one item per recipient.
SELECT cardinality(outbox.enqueue_items(
    ARRAY(SELECT ROW(%(message_id)s || '/' || r.id, r.external_id, 'bench', '{}'::jsonb, NULL, NULL,
                     NULL, 0, NULL, NULL)::outbox.enqueue_item
          FROM outbox.recipients r WHERE r.external_id LIKE 'b%%' ORDER BY r.id),
    'bench', 0));

-- name: broadcast_plain_run
-- The reference: one plain row per destination (email and phone) in one INSERT.
INSERT INTO bench_plain_outbox (message_id, destination)
SELECT %(message_id)s, d FROM outbox.recipients r CROSS JOIN LATERAL (VALUES (r.email), (r.phone)) v(d)
WHERE r.external_id LIKE 'b%%';
