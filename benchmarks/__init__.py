"""Outbox benchmarks: enqueue, drain, wake-up latency.

``python -m benchmarks`` runs them all against the configured PostgreSQL (or
the embedded one) and rewrites ``docs/benchmarks.md``; each module also runs
alone (``python -m benchmarks.drain --help``). Every benchmark works in a
database of its own, created and migrated at the start and dropped at the end.
"""
