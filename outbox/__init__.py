"""Outbox: transactional notifications for applications on PostgreSQL."""
