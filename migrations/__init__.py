"""Outbox's alembic migrations (installed as ``outbox.migrations``).

Not imported for its code: :mod:`outbox.migrate` finds this folder through it,
in a checkout (``migrations/``) and in an installed wheel alike.
"""
