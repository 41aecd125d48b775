-- Revision 0012, downgrade (after 0007_enqueue.sql has put back outbox.enqueue
-- and outbox.enqueue_many as 0007 made them, and before 0007_security_definer.sql
-- pins them again): drop what 0012 added.
DROP FUNCTION outbox.enqueue_items(outbox.enqueue_item[], text, bigint);
DROP FUNCTION outbox.timestamptz_problem(text);
DROP FUNCTION outbox.enqueue_deliveries(bigint[]);
DROP TYPE outbox.enqueue_item;
