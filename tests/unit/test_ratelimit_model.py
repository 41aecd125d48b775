"""The token bucket model (tests/ratelimit_model.py): worked examples and properties.

The model is the oracle tests/integration/test_ratelimit.py holds sql/ratelimit.sql
to; these pin the model itself.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ratelimit_model import Bucket, take


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- token buckets: examples -------------------------------------------------------------

T0 = utc(2026, 1, 1)


def test_a_full_bucket_grants_its_burst_then_makes_you_wait():
    bucket = Bucket.full(3, T0)
    for _ in range(3):
        bucket, wait = take(bucket, T0, rate_per_second=2.0, burst=3)
        assert wait == 0.0
    bucket, wait = take(bucket, T0, rate_per_second=2.0, burst=3)
    assert wait == 0.5
    assert bucket.tokens == 0.0  # a denied take consumes nothing
    bucket, wait = take(bucket, T0 + timedelta(seconds=0.5), rate_per_second=2.0, burst=3)
    assert wait == 0.0


def test_refill_stops_at_burst():
    bucket, _ = take(Bucket(0.0, T0), T0 + timedelta(hours=1), rate_per_second=10.0, burst=5)
    assert bucket.tokens == 4.0


def test_a_clock_going_backwards_mints_nothing():
    bucket = Bucket(1.0, T0)
    earlier = T0 - timedelta(seconds=30)
    bucket, wait = take(bucket, earlier, rate_per_second=1.0, burst=10)
    assert (bucket.tokens, bucket.updated_at, wait) == (0.0, T0, 0.0)
    bucket, wait = take(bucket, earlier, rate_per_second=1.0, burst=10)
    # Nothing until the clock is back at T0, then one second for a token.
    assert wait == 31.0
    bucket, wait = take(bucket, T0 + timedelta(seconds=1), rate_per_second=1.0, burst=10)
    assert wait == 0.0


def test_taking_several_tokens_at_once():
    bucket, wait = take(Bucket(1.0, T0), T0, rate_per_second=1.0, burst=5, n=3)
    assert (bucket.tokens, wait) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("rate", "burst", "n"),
    [(0.0, 5, 1), (-1.0, 5, 1), (math.inf, 5, 1), (1.0, 0, 1), (1.0, 5, 6), (1.0, 5, 0)],
)
def test_take_rejects_bad_arguments(rate, burst, n):
    with pytest.raises(ValueError):
        take(Bucket.full(5, T0), T0, rate, burst, n)


# --- token buckets: properties ------------------------------------------------------------

rates = st.floats(0.01, 1000.0)
bursts = st.integers(1, 50)
steps = st.lists(
    st.tuples(st.integers(0, 3_000_000), st.integers(1, 3)), min_size=1, max_size=60
)  # (microseconds since the previous take, tokens wanted)


@given(rates, bursts, st.floats(0.0, 50.0), steps)
def test_bucket_stays_between_zero_and_burst(rate, burst, initial, steps):
    bucket, now = Bucket(min(initial, burst), T0), T0
    for gap, n in steps:
        now += timedelta(microseconds=gap)
        bucket, wait = take(bucket, now, rate, burst, min(n, burst))
        assert 0.0 <= bucket.tokens <= burst
        assert wait >= 0.0


@given(rates, bursts, steps)
def test_grants_in_any_window_are_at_most_burst_plus_rate_times_its_length(rate, burst, steps):
    bucket, now = Bucket.full(burst, T0), T0
    granted: list[tuple[datetime, int]] = []
    for gap, n in steps:
        now += timedelta(microseconds=gap)
        n = min(n, burst)
        bucket, wait = take(bucket, now, rate, burst, n)
        if wait == 0.0:
            granted.append((now, n))
    for i, (t0, _) in enumerate(granted):
        taken = 0
        for t1, n in granted[i:]:
            taken += n
            assert taken <= burst + rate * (t1 - t0).total_seconds() + 1e-9


@given(rates, bursts, steps)
def test_a_denied_take_succeeds_after_the_reported_wait(rate, burst, steps):
    bucket, now = Bucket.full(burst, T0), T0
    for gap, n in steps:
        now += timedelta(microseconds=gap)
        n = min(n, burst)
        bucket, wait = take(bucket, now, rate, burst, n)
        if wait > 0.0:
            later = now + timedelta(seconds=wait)
            _, second_wait = take(bucket, later, rate, burst, n)
            assert second_wait == 0.0
            # ...and the wait is not padded: a microsecond earlier is too early.
            _, early_wait = take(bucket, later - timedelta(microseconds=1), rate, burst, n)
            assert early_wait > 0.0


@given(rates, bursts, st.lists(st.integers(-2_000_000, 2_000_000), min_size=1, max_size=60))
def test_a_wandering_clock_grants_no_more_than_the_time_really_elapsed(rate, burst, jumps):
    bucket, now, latest = Bucket.full(burst, T0), T0, T0
    granted = 0
    for jump in jumps:
        now += timedelta(microseconds=jump)
        latest = max(latest, now)
        bucket, wait = take(bucket, now, rate, burst)
        granted += wait == 0.0
        assert 0.0 <= bucket.tokens <= burst
    assert granted <= burst + rate * (latest - T0).total_seconds() + 1e-9
