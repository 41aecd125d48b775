"""The token bucket as a Python model: the tests' oracle for sql/ratelimit.sql.

Not product code. The rate limits the workers apply are the PostgreSQL
functions ``outbox.take_tokens`` (sql/ratelimit.sql) and ``outbox.admit``
(sql/admit.sql); this module states the same rules readably, so that
tests/unit/test_ratelimit_model.py can check them with properties and
tests/integration/test_ratelimit.py can require the SQL to agree with it, to the
microsecond, on random histories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Bucket", "take"]

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Bucket:
    """A token bucket's stored state: tokens left as of ``updated_at``."""

    tokens: float
    updated_at: datetime

    @classmethod
    def full(cls, burst: float, now: datetime) -> Bucket:
        """A new bucket, full."""
        return cls(tokens=float(burst), updated_at=now)


def _microseconds(delta: timedelta) -> int:
    return delta // _ONE_MICROSECOND


def take(
    bucket: Bucket, now: datetime, rate_per_second: float, burst: float, n: float = 1
) -> tuple[Bucket, float]:
    """Try to take ``n`` tokens at ``now``: the new bucket, and 0.0 or the seconds to wait.

    The rules (the PostgreSQL function follows the same ones):

    1. Refill: elapsed = ``now - updated_at`` in whole microseconds, never negative;
       tokens = min(burst, max(0, tokens) + elapsed / 1e6 * rate). The new
       ``updated_at`` is the later of the two, so a clock that goes back mints
       nothing now and does not count the same time twice later.
    2. If tokens >= n, take them: wait 0.
    3. Otherwise take nothing; wait is the smallest whole number of microseconds
       after which rule 1 yields >= n tokens (plus the time until the clock is back
       at ``updated_at``, if it went back). A take at ``now + wait`` succeeds.

    Raises ValueError unless rate and burst are finite and > 0 and 0 < n <= burst.
    """
    if not (0.0 < rate_per_second < math.inf) or not (0.0 < burst < math.inf):
        raise ValueError(
            f"rate and burst must be finite and > 0, got rate={rate_per_second}, burst={burst}"
        )
    if not 0 < n <= burst:
        raise ValueError(f"n must be > 0 and <= burst ({burst}), got {n}")
    start = max(bucket.updated_at, now)
    elapsed_us = _microseconds(start - bucket.updated_at)
    tokens = float(min(burst, max(0.0, bucket.tokens) + elapsed_us / 1_000_000 * rate_per_second))
    if tokens >= n:
        return Bucket(tokens - n, start), 0.0

    def enough(us: int) -> bool:
        return tokens + us / 1_000_000 * rate_per_second >= n

    need_us = max(1, math.ceil((n - tokens) / rate_per_second * 1_000_000))
    # The float estimate can be a microsecond off either way; settle on the exact
    # smallest value under rule 1, so the PostgreSQL function can agree to the microsecond.
    while not enough(need_us):
        need_us += 1
    while need_us > 1 and enough(need_us - 1):
        need_us -= 1
    wait_us = _microseconds(start - now) + need_us
    return Bucket(tokens, start), wait_us / 1_000_000
