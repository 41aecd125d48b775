"""Circuit breakers, one per provider, shared by every worker through PostgreSQL.

Everything about them, by where it lives:

* :mod:`.rules` (``outbox.workers.breaker.rules``): the rules as pure
  functions of (breaker, what happened, now), with the state diagram; the unit
  tests pin each rule (tests/unit/test_breaker.py).
* ``sql/breaker.sql``: the same rules in PL/pgSQL (``outbox.breaker_record``,
  ``outbox.breaker_refresh``), applied under a row lock to
  ``outbox.provider_breakers``. Installed by migration 0004, so it is not edited
  in place; tests/integration/test_breaker.py runs both on the same random
  histories and requires the same rows.
* ``sql/queries/breaker.sql``: the two named queries that call them, run only
  through workers/store.py.
* :mod:`.view` (``outbox.workers.breaker.view``): this worker's in-memory view,
  :class:`Breakers`, whose :meth:`~Breakers.available` is the router's
  availability check (given to the Router when the worker builds it).
"""

from outbox.workers.breaker.rules import BreakerPolicy
from outbox.workers.breaker.view import Breakers

__all__ = ["BreakerPolicy", "Breakers"]
