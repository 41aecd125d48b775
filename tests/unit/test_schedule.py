"""Quiet hours and retry backoff: worked examples and properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from outbox.schedule import backoff_delay, next_attempt_at, quiet_until


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- quiet hours: worked examples ----------------------------------------------------

NIGHT = (time(22), time(7))
LORD_HOWE = "Australia/Lord_Howe"

EXAMPLES = [
    # zone, (start, end), now, expected end of quiet hours (None: not quiet)
    # New York, an ordinary winter day (EST, UTC-5), window wrapping midnight.
    ("America/New_York", NIGHT, utc(2026, 1, 15, 3, 30), utc(2026, 1, 15, 12, 0)),  # 22:30
    ("America/New_York", NIGHT, utc(2026, 1, 15, 11, 59), utc(2026, 1, 15, 12, 0)),  # 06:59
    ("America/New_York", NIGHT, utc(2026, 1, 15, 12, 0), None),  # 07:00: end is exclusive
    ("America/New_York", NIGHT, utc(2026, 1, 16, 2, 59), None),  # 21:59
    ("America/New_York", NIGHT, utc(2026, 1, 16, 3, 0), utc(2026, 1, 16, 12, 0)),  # 22:00
    # Summer (EDT, UTC-4).
    ("America/New_York", NIGHT, utc(2026, 7, 1, 4, 0), utc(2026, 7, 1, 11, 0)),
    # Spring forward, 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
    # 00:00 EST; the night ends at 07:00 EDT, 11:00 UTC (a shorter night).
    ("America/New_York", NIGHT, utc(2026, 3, 8, 5, 0), utc(2026, 3, 8, 11, 0)),
    # End time 02:30 never happens that day: quiet ends at the jump.
    ("America/New_York", (time(1), time(2, 30)), utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0)),
    # Start time 02:15 never happens: quiet starts at the jump (07:00 UTC = 03:00 EDT).
    ("America/New_York", (time(2, 15), time(5)), utc(2026, 3, 8, 6, 59), None),
    ("America/New_York", (time(2, 15), time(5)), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 9, 0)),
    # A window entirely inside the skipped hour is empty that day.
    ("America/New_York", (time(2, 10), time(2, 40)), utc(2026, 3, 8, 7, 0), None),
    # Fall back, 2026-11-01: 02:00 EDT goes back to 01:00 EST at 06:00 UTC.
    # 00:00 EDT; the night ends at 07:00 EST, 12:00 UTC (a longer night).
    ("America/New_York", NIGHT, utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 12, 0)),
    # End time 01:30 happens twice: quiet ends at the first one, 01:30 EDT = 05:30 UTC...
    ("America/New_York", (time(22), time(1, 30)), utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 5, 30)),
    # ...and the second 01:15 (EST, 06:15 UTC) is after that: not quiet.
    ("America/New_York", (time(22), time(1, 30)), utc(2026, 11, 1, 6, 15), None),
    # Start time 01:30 happens twice: quiet starts at the first one (05:30 UTC).
    ("America/New_York", (time(1, 30), time(3)), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 8, 0)),
    ("America/New_York", (time(1, 30), time(3)), utc(2026, 11, 1, 5, 29), None),
    # Paris (CEST, UTC+2 in summer; CET, UTC+1 in winter).
    ("Europe/Paris", (time(22), time(8)), utc(2026, 6, 15, 21, 30), utc(2026, 6, 16, 6, 0)),
    ("Europe/Paris", (time(22), time(8)), utc(2026, 12, 15, 21, 30), utc(2026, 12, 16, 7, 0)),
    ("Europe/Paris", (time(22), time(8)), utc(2026, 6, 15, 19, 59), None),
    # Paris spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
    ("Europe/Paris", (time(22), time(8)), utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 6, 0)),
    # Kolkata (IST, UTC+5:30, no DST).
    ("Asia/Kolkata", (time(21), time(9)), utc(2026, 1, 10, 16, 0), utc(2026, 1, 11, 3, 30)),
    ("Asia/Kolkata", (time(21), time(9)), utc(2026, 1, 10, 15, 29), None),
    # A daytime window that does not wrap.
    ("Asia/Kolkata", (time(13), time(14)), utc(2026, 1, 10, 7, 45), utc(2026, 1, 10, 8, 30)),
    # Lord Howe: UTC+10:30, and UTC+11 in summer (a 30-minute DST).
    (LORD_HOWE, NIGHT, utc(2026, 7, 1, 12, 0), utc(2026, 7, 1, 20, 30)),
    (LORD_HOWE, NIGHT, utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 20, 0)),
    # 2026-10-04: 02:00 jumps to 02:30 (15:30 UTC); an end at 02:15 resolves to the jump.
    (LORD_HOWE, (time(1), time(2, 15)), utc(2026, 10, 3, 15, 0), utc(2026, 10, 3, 15, 30)),
    (LORD_HOWE, (time(2), time(2, 15)), utc(2026, 10, 3, 15, 30), None),
    # 02:20-02:10 (quiet all day but ten minutes): on the jump day both ends resolve to
    # the jump, so yesterday's window runs straight into today's.
    (LORD_HOWE, (time(2, 20), time(2, 10)), utc(2026, 10, 3, 15, 0), utc(2026, 10, 4, 15, 10)),
    # 2026-04-05: 02:00 (UTC+11) goes back to 01:30 (UTC+10:30) at 15:00 UTC; 01:45
    # happens twice and the first one (14:45 UTC) ends the night.
    (LORD_HOWE, (time(22), time(1, 45)), utc(2026, 4, 4, 14, 0), utc(2026, 4, 4, 14, 45)),
    (LORD_HOWE, (time(22), time(1, 45)), utc(2026, 4, 4, 15, 0), None),
]


@pytest.mark.parametrize(("tz", "window", "now", "expected"), EXAMPLES)
def test_quiet_until(tz, window, now, expected):
    result = quiet_until(now, tz, *window)
    assert result == expected
    if result is not None:
        assert result.tzinfo is UTC


def test_now_may_be_in_any_zone():
    now = utc(2026, 1, 15, 3, 30)
    expected = utc(2026, 1, 15, 12, 0)
    for zone in ("Asia/Tokyo", "America/Los_Angeles", "Europe/Paris"):
        assert quiet_until(now.astimezone(ZoneInfo(zone)), "America/New_York", *NIGHT) == expected


def test_start_equal_to_end_means_no_quiet_hours():
    assert quiet_until(utc(2026, 1, 15, 3, 30), "America/New_York", time(0), time(0)) is None


def test_unknown_time_zone_is_named():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus_Mons'"):
        quiet_until(utc(2026, 1, 1), "Mars/Olympus_Mons", *NIGHT)
    with pytest.raises(ValueError, match="unknown time zone '../etc/passwd'"):
        quiet_until(utc(2026, 1, 1), "../etc/passwd", *NIGHT)


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        quiet_until(datetime(2026, 1, 1), "Europe/Paris", *NIGHT)


def test_window_times_with_a_zone_are_refused():
    with pytest.raises(ValueError, match="wall-clock"):
        quiet_until(utc(2026, 1, 1), "Europe/Paris", time(22, tzinfo=UTC), time(7))


# --- quiet hours: properties ----------------------------------------------------------

ZONES = [
    "America/New_York",
    "Europe/Paris",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",  # DST changes at midnight
    "Pacific/Chatham",  # UTC+12:45 / +13:45
    "UTC",
]
wall_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 29, 30, 45, 59]))
instants = st.datetimes(
    min_value=datetime(2025, 12, 25), max_value=datetime(2027, 1, 5), timezones=st.just(UTC)
)


@given(st.sampled_from(ZONES), wall_times, wall_times, instants)
def test_quiet_until_is_after_now_and_outside_the_quiet_hours(tz, start, end, now):
    result = quiet_until(now, tz, start, end)
    if result is None:
        return
    assert result > now
    assert quiet_until(result, tz, start, end) is None
    # A window lasts under a day; two chained on a DST-jump day, under two.
    assert result - now <= timedelta(days=2)


@given(st.sampled_from(ZONES), wall_times, wall_times, instants)
def test_away_from_dst_changes_quiet_means_the_local_clock_is_in_the_window(tz, start, end, now):
    zone = ZoneInfo(tz)
    offsets = {(now + timedelta(hours=h)).astimezone(zone).utcoffset() for h in (-26, 0, 26)}
    assume(len(offsets) == 1)
    wall = now.astimezone(zone).time().replace(tzinfo=None)
    if start == end:
        inside = False
    elif start < end:
        inside = start <= wall < end
    else:
        inside = wall >= start or wall < end
    result = quiet_until(now, tz, start, end)
    assert (result is not None) == inside
    if result is not None:
        assert result.astimezone(zone).time() == end


# --- backoff ----------------------------------------------------------------------------


def test_backoff_examples():
    assert backoff_delay(1, base=2.0, cap=3600.0, rand=0.5) == 1.0
    assert backoff_delay(4, base=2.0, cap=3600.0, rand=0.5) == 8.0
    assert backoff_delay(20, base=2.0, cap=3600.0, rand=0.5) == 1800.0
    assert backoff_delay(3, base=2.0, cap=3600.0, rand=0.0) == 0.0


@pytest.mark.parametrize("attempt", [1024, 1025, 10_000, 10**18, 10**100])
def test_huge_attempt_numbers_stop_at_the_cap(attempt):
    assert backoff_delay(attempt, base=2.0, cap=3600.0, rand=0.25) == 900.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 2.0, 60.0, 0.5), "attempt"),
        ((1, -1.0, 60.0, 0.5), "base"),
        ((1, 2.0, math.inf, 0.5), "cap"),
        ((1, 2.0, 60.0, 1.0), "rand"),
        ((1, 2.0, 60.0, -0.1), "rand"),
    ],
)
def test_backoff_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        backoff_delay(*args)


attempts = st.integers(1, 10_000)
bases = st.floats(0.001, 1000.0)
caps = st.floats(0.0, 10**7)
rands = st.floats(0.0, 1.0, exclude_max=True)


@given(attempts, bases, caps, rands)
def test_backoff_is_within_its_bound(attempt, base, cap, rand):
    # Past ~1000 doublings even the smallest base is beyond any cap (and beyond a float).
    bound = cap if attempt > 1000 else min(cap, base * 2.0 ** (attempt - 1))
    assert 0.0 <= backoff_delay(attempt, base, cap, rand) <= bound


@given(attempts, bases, caps, rands)
def test_backoff_bound_never_shrinks_as_attempts_grow(attempt, base, cap, rand):
    assert backoff_delay(attempt, base, cap, rand) <= backoff_delay(attempt + 1, base, cap, rand)


aware_instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Kolkata")]),
)


@given(aware_instants, attempts, bases, caps, rands, st.none() | st.floats(0.0, 10**8))
def test_next_attempt_honours_retry_after(now, attempt, base, cap, rand, retry_after):
    result = next_attempt_at(now, attempt, base, cap, rand, retry_after)
    # Add to UTC: adding a timedelta to a Paris time adds wall-clock time, not elapsed time.
    now = now.astimezone(UTC)
    assert result >= now + timedelta(seconds=retry_after or 0.0)
    longest = timedelta(seconds=max(cap, retry_after or 0.0))
    assert result <= now + longest + timedelta(microseconds=1)


def test_next_attempt_examples():
    now = utc(2026, 5, 1, 12, 0)
    assert next_attempt_at(now, 3, 2.0, 3600.0, 0.5) == now + timedelta(seconds=4)
    assert next_attempt_at(now, 3, 2.0, 3600.0, 0.5, retry_after=30) == now + timedelta(seconds=30)
    assert next_attempt_at(now, 3, 2.0, 3600.0, 0.5, retry_after=1) == now + timedelta(seconds=4)


def test_next_attempt_never_overflows():
    now = utc(2026, 5, 1)
    assert next_attempt_at(now, 10**9, 2.0, 3600.0, 0.9) == now + timedelta(seconds=3240)
    latest = datetime.max.replace(tzinfo=UTC)
    assert next_attempt_at(now, 1, 2.0, 60.0, 0.5, retry_after=1e300) == latest
    assert next_attempt_at(now, 1, 2.0, 60.0, 0.5, retry_after=math.inf) == latest


def test_next_attempt_refuses_naive_now_and_nan():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_attempt_at(datetime(2026, 1, 1), 1, 2.0, 60.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        next_attempt_at(utc(2026, 1, 1), 1, 2.0, 60.0, 0.5, retry_after=math.nan)
