-- The benchmarks' own SQL: baselines, fast set-based loading, and result queries.
-- Blocks start with "-- name: <name>" like sql/queries/*.sql; harness.sql(name)
-- loads them. Everything here runs only in a benchmark's own fresh database.

-- name: listening_sessions
-- Sessions of one kind of process (by application_name prefix) idle in LISTEN:
-- the processes are up and waiting for a wake-up.
SELECT count(*)
FROM pg_stat_activity
WHERE datname = current_database()
  AND starts_with(application_name, %(prefix)s)
  AND state = 'idle'
  AND query LIKE 'LISTEN%%';

-- name: server_settings
-- The settings that decide commit cost, printed next to the numbers.
SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY (%s) ORDER BY name;

-- name: benchmark_databases
-- Databases made by benchmarks/harness.fresh_database (checked further by name there).
SELECT datname FROM pg_database WHERE starts_with(datname, %(prefix)s) ORDER BY datname;

-- name: create_baselines
-- The baseline tables. plain_outbox: what a hand-rolled outbox would insert
-- into (one table, the same kind of columns and partial index as
-- outbox.deliveries). raw_jobs: the table of the raw SKIP LOCKED loop, with the
-- claim index of outbox.deliveries.
CREATE SCHEMA bench;
CREATE TABLE bench.plain_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       text NOT NULL UNIQUE,
    channel          text NOT NULL,
    destination      text NOT NULL,
    template_key     text NOT NULL,
    data             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending',
    priority         smallint NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plain_outbox_due ON bench.plain_outbox (priority DESC, next_attempt_at) WHERE status = 'pending';
CREATE TABLE bench.raw_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination      text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending',
    priority         smallint NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX raw_jobs_due ON bench.raw_jobs (priority DESC, next_attempt_at) WHERE status = 'pending';

-- name: count_deliveries
SELECT count(*) FROM outbox.deliveries;

-- name: plain_insert
-- The baseline of a single enqueue: one row, one statement.
INSERT INTO bench.plain_outbox (message_id, channel, destination, template_key, data)
VALUES (%(message_id)s, 'email', %(address)s, %(template)s, %(data)s::jsonb);

-- name: disable_notify
-- Session-wide: the deliveries trigger sends no NOTIFY from this connection.
SET outbox.notify = 'off';

-- name: disable_notify_local
SET LOCAL outbox.notify = 'off';

-- name: allow_history_delete
-- The benchmarks reset their own databases by hand, as the superuser: this
-- session may delete events outside the retention functions (sql/retention.sql,
-- trigger events_no_delete, which checks this setting and the table's owner).
SET outbox.retention = 'on';

-- name: outbox_fill
-- %(n)s pending email deliveries to direct addresses, set-based, as enqueue
-- would leave them (notification, delivery, 'created' event). Run after
-- disable_notify_local: the benchmark wakes the workers itself.
WITH n AS (
    INSERT INTO outbox.notifications (message_id, address, template_key, data, channels)
    SELECT %(prefix)s || i, 'user' || i || '@example.com', %(template)s,
           jsonb_build_object('n', i), ARRAY['email']::outbox.channel[]
    FROM generate_series(1, %(n)s) AS i
    RETURNING id, address
), d AS (
    INSERT INTO outbox.deliveries (notification_id, channel, destination, max_attempts)
    SELECT n.id, 'email', n.address,
           (SELECT c.max_attempts FROM outbox.channel_config c WHERE c.channel = 'email')
    FROM n
    RETURNING id, notification_id
)
INSERT INTO outbox.events (notification_id, delivery_id, kind, attempt)
SELECT d.notification_id, d.id, 'created', 0 FROM d;

-- name: outbox_analyze
ANALYZE outbox.notifications, outbox.deliveries, outbox.events;

-- name: outbox_reset
TRUNCATE outbox.events, outbox.deliveries, outbox.notifications;

-- name: plain_reset
-- The plain COPY's table, emptied between bulk rounds (each round reuses its message ids).
TRUNCATE bench.plain_outbox;

-- name: outbox_go
-- Start the clock (database time) and wake the idle workers.
SELECT extract(epoch FROM clock_timestamp())::float8 AS t0, pg_notify('outbox_work', '');

-- name: outbox_unfinished
-- (Two counts, each over its own partial index.)
SELECT (SELECT count(*) FROM outbox.deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM outbox.deliveries WHERE status = 'processing') AS processing;

-- name: outbox_drain_result
-- What a drain did: deliveries by outcome, when the last one finished, the
-- audit events the worker wrote ('created' events come from the fill), and
-- deliveries attempted more than once (their lease expired before their result
-- was recorded, so lease recovery gave them to another claim: possible resends).
SELECT (SELECT count(*) FROM outbox.deliveries WHERE status = 'sent') AS sent,
       (SELECT count(*) FROM outbox.deliveries WHERE status <> 'sent') AS not_sent,
       (SELECT max(attempts) FROM outbox.deliveries) AS max_attempts,
       (SELECT count(*) FROM outbox.deliveries WHERE attempts > 1) AS resent,
       (SELECT count(*) FROM outbox.events WHERE kind = 'recovered') AS recovered,
       (SELECT extract(epoch FROM max(finished_at))::float8 FROM outbox.deliveries) AS last_finished,
       (SELECT count(*) FROM outbox.events WHERE kind <> 'created') AS events_written,
       (SELECT count(*) FROM outbox.events WHERE kind = 'processing') AS processing_events,
       (SELECT count(DISTINCT (worker, created_at)) FROM outbox.events WHERE kind = 'processing') AS claims,
       (SELECT extract(epoch FROM min(created_at))::float8 FROM outbox.events WHERE kind = 'processing')
           AS first_claim;

-- name: raw_fill
INSERT INTO bench.raw_jobs (destination, payload)
SELECT 'user' || i || '@example.com', jsonb_build_object('n', i)
FROM generate_series(1, %(n)s) AS i;

-- name: raw_analyze
ANALYZE bench.raw_jobs;

-- name: raw_reset
TRUNCATE bench.raw_jobs;

-- name: raw_listen
LISTEN bench_raw_go;

-- name: raw_go
SELECT extract(epoch FROM clock_timestamp())::float8 AS t0, pg_notify('bench_raw_go', '');

-- name: raw_claim_done
-- The one-statement raw loop: claim a batch of due rows, skipping locked ones,
-- and mark them done, in one statement and one commit. A floor rather than a
-- queue: a consumer that crashed mid-batch would leave no trace of it.
WITH due AS (
    SELECT j.id
    FROM bench.raw_jobs j
    WHERE j.status = 'pending' AND j.next_attempt_at <= now()
    ORDER BY j.priority DESC, j.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE bench.raw_jobs j
SET status = 'done', finished_at = now()
FROM due
WHERE j.id = due.id;

-- name: raw_claim
-- The raw loop's first step: claim a batch (SKIP LOCKED, marked processing,
-- committed) and read what was claimed, as any at-least-once consumer must
-- before it does the work.
WITH due AS (
    SELECT j.id
    FROM bench.raw_jobs j
    WHERE j.status = 'pending' AND j.next_attempt_at <= now()
    ORDER BY j.priority DESC, j.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE bench.raw_jobs j
SET status = 'processing'
FROM due
WHERE j.id = due.id
RETURNING j.id, j.destination, j.payload;

-- name: raw_done
-- The raw loop's second step: mark the claimed batch done (committed).
UPDATE bench.raw_jobs
SET status = 'done', finished_at = now()
WHERE id = ANY (%(ids)s::bigint[]);

-- name: raw_result
SELECT count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status <> 'done') AS not_done,
       extract(epoch FROM max(finished_at))::float8 AS last_finished
FROM bench.raw_jobs;

-- name: listen_work
LISTEN outbox_work;

-- name: processing_times
-- When each delivery's start mark was written (its transaction's start, database
-- clock): after the claim and the render, just before the provider call.
SELECT delivery_id, extract(epoch FROM created_at)::float8 AS claimed_at
FROM outbox.events
WHERE kind = 'processing';

-- name: plain_copy
-- The baseline of bulk enqueue: COPY into the hand-rolled outbox, one row per delivery.
COPY bench.plain_outbox (message_id, channel, destination, template_key, data) FROM STDIN;
