-- Downgrade of migration 0002: the rate-limit tables and functions go.
--
-- The template functions stay: 0002 reinstalled them from a file identical to
-- 0001_functions_templates.sql, so they already are what a database at 0001 has.
-- Stored hashes keep the formula 0002 gave them.
DROP FUNCTION outbox.admit(bigint[], bigint[], text[], text[], boolean[], text[], text[],
                           timestamptz, integer);
DROP FUNCTION outbox.prune_rate_buckets(integer, timestamptz);
DROP FUNCTION outbox.take_tokens(integer[], text[], text[], text[], timestamptz);
DROP FUNCTION outbox.token_wait_us(double precision, double precision, double precision);
DROP TABLE outbox.rate_buckets;
DROP TABLE outbox.rate_limits;
