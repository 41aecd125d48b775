-- Migration 0005, before 0005_admit.sql: admit's arguments lose categories and
-- critical, and its result the verdict column. A new signature is a new function,
-- so 0002's is dropped rather than replaced.
DROP FUNCTION outbox.admit(
    bigint[], bigint[], text[], text[], boolean[], text[], text[], timestamptz, integer);
