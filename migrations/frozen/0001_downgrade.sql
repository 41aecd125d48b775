-- Downgrade of migration 0001: the outbox schema goes, with every row in it.
DROP SCHEMA outbox CASCADE;
