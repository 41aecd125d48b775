-- Downgrade of migration 0005: drop its admit; 0002_admit.sql then restores 0002's.
DROP FUNCTION outbox.admit(bigint[], bigint[], text[], text[], text[], timestamptz, integer);
