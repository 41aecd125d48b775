-- Downgrade of migration 0004: the breaker functions, table and enum go
-- (grants on the table go with it).
DROP FUNCTION outbox.breaker_refresh(text, text[], double precision, timestamptz);
DROP FUNCTION outbox.breaker_record(
    text, text[], integer[], integer[], integer[], text[],
    integer, double precision, double precision, timestamptz);
DROP TABLE outbox.provider_breakers;
DROP TYPE outbox.breaker_state;
