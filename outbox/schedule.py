"""When to send: quiet hours and retry backoff, as pure functions.

Nothing here reads a clock or draws a random number: ``now`` and ``rand`` are
arguments, so the worker decides, and tests can pin every instant. (Rate limits
are not here: their token buckets live in PostgreSQL, sql/ratelimit.sql, and
the tests' Python model of them is tests/ratelimit_model.py.)
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "backoff_delay",
    "next_attempt_at",
    "past_expiry",
    "quiet_until",
]


def past_expiry(expires_at: datetime | None, at: datetime) -> bool:
    """Whether a message that expires at ``expires_at`` may no longer be sent at ``at``.

    The one "never send late" rule of the Python side (the worker's checks and
    the provider adapters' last one). No expiry: never. The boundary counts as
    expired: a message due "until 12:00" is not sent at 12:00.
    """
    return expires_at is not None and at >= expires_at


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")


# --- quiet hours ---------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {tz!r}: expected an IANA name") from None


def _wall_time(value: time, name: str) -> time:
    if value.tzinfo is not None:
        raise ValueError(f"{name} must be a local wall-clock time without tzinfo, got {value!r}")
    # The resolution rule below picks the occurrence; a caller's fold must not.
    return value.replace(fold=0)


def _jump_instant(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant of the UTC-offset change in ``(before, after]``, to the second.

    zoneinfo has no public list of transitions; they fall on whole seconds, so a
    bisection over at most a few hours of seconds takes a dozen steps.
    """
    new_offset = after.astimezone(zone).utcoffset()
    lo, hi = math.floor(before.timestamp()), math.floor(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == new_offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _first_instant_at(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The first instant at which the local clock on ``day`` reads ``wall`` or later.

    That is the wall time itself when it exists once; its first occurrence when the
    clocks go back and it happens twice; and, when the clocks jump over it, the
    instant of the jump (02:30 on a 02:00→03:00 day resolves to 03:00). Unlike
    Python's own fold=0 reading of a skipped time (02:30 → 03:30), this never
    reorders two wall times, so a window's start never lands after its end.
    """
    local = datetime.combine(day, wall, tzinfo=zone)  # fold=0: the first occurrence
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # Skipped: fold=1 reads it with the offset after the jump, which lands before the
    # jump; fold=0 reads it with the offset before, which lands after.
    return _jump_instant(local.replace(fold=1).astimezone(UTC), instant, zone)


def _window_end(instant: datetime, zone: ZoneInfo, start: time, end: time) -> datetime | None:
    """The end of the quiet window containing ``instant``, or None if it is in none."""
    today = instant.astimezone(zone).date()
    # A window that wraps midnight began the day before; two days back also covers
    # zones whose clocks once went back across midnight.
    for back in (2, 1, 0):
        day = today - timedelta(days=back)
        end_day = day + timedelta(days=1) if start > end else day
        window_start = _first_instant_at(day, start, zone)
        window_end = _first_instant_at(end_day, end, zone)
        if window_start <= instant < window_end:
            return window_end
    return None


def quiet_until(now: datetime, tz: str, start: time, end: time) -> datetime | None:
    """When the recipient's quiet hours end (aware, UTC), or None if ``now`` is not in them.

    Quiet hours run each local day from ``start`` to ``end`` in the IANA zone ``tz``,
    wrapping past midnight when ``start > end`` (22:00–07:00); ``start == end`` means
    none. Each boundary is the first instant the local clock reads that time or
    later: a time the clocks skip (spring forward) resolves to the instant of the
    jump, a time that happens twice (fall back) to its first occurrence. ``now`` may
    be in any zone. Raises ValueError for an unknown ``tz`` or a naive ``now``.
    """
    _require_aware(now, "now")
    zone = _zone(tz)
    start, end = _wall_time(start, "start"), _wall_time(end, "end")
    if start == end:
        return None
    until = None
    probe = now.astimezone(UTC)
    # One window can end exactly where the next starts when both boundaries fall in
    # the same skipped hour; follow the chain (it is never longer than that).
    for _ in range(4):
        window_end = _window_end(probe, zone, start, end)
        if window_end is None:
            break
        until = probe = window_end
    return until


# --- retry backoff -----------------------------------------------------------------


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Seconds to wait before retry number ``attempt``: exponential backoff, full jitter.

    ``rand * min(cap, base * 2 ** (attempt - 1))`` with ``rand`` in [0, 1) drawn by
    the caller. Any attempt number is safe: past the cap, growth stops (no overflow).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not (0.0 <= base < math.inf) or not (0.0 <= cap < math.inf):
        raise ValueError(f"base and cap must be finite and >= 0, got base={base}, cap={cap}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    try:
        grown = math.ldexp(base, attempt - 1)  # base * 2**(attempt-1), exactly
    except OverflowError:
        grown = math.inf
    return rand * min(cap, grown)


def next_attempt_at(
    now: datetime,
    attempt: int,
    base: float,
    cap: float,
    rand: float,
    retry_after: float | None = None,
) -> datetime:
    """When to try again (aware, UTC): ``now`` plus the backoff delay, or plus the
    provider's Retry-After if that is longer.

    A Retry-After too large to represent (or infinite) gives the latest representable
    instant rather than an OverflowError.
    """
    _require_aware(now, "now")
    if retry_after is not None and math.isnan(retry_after):
        raise ValueError("retry_after must be a number of seconds, got NaN")
    delay = max(backoff_delay(attempt, base, cap, rand), retry_after or 0.0)
    now_utc = now.astimezone(UTC)
    latest = datetime.max.replace(tzinfo=UTC)
    if delay >= (latest - now_utc).total_seconds():
        return latest
    return now_utc + timedelta(seconds=delay)
