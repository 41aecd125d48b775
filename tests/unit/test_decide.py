"""The outcome -> next state rules (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from outbox.providers.base import Outcome
from outbox.workers.decide import MAX_RETRY_AFTER_SECONDS, RetryPolicy, decide

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=2.0, cap_seconds=600.0, config_pause_seconds=60.0)


def _decide(outcome, attempt=1, max_attempts=5, expires_at=None, rand=0.5):
    return decide(
        outcome,
        provider="p",
        attempt=attempt,
        max_attempts=max_attempts,
        expires_at=expires_at,
        now=NOW,
        rand=rand,
        policy=POLICY,
    )


def test_sent():
    d = _decide(Outcome.sent("abc"))
    assert (d.status, d.kind, d.provider_message_id, d.error) == ("sent", "sent", "abc", None)


def test_retry_uses_backoff_with_jitter():
    d = _decide(Outcome.retry("503"), attempt=3, rand=0.5)
    assert (d.status, d.kind, d.error, d.refund, d.in_doubt) == ("pending", "retry", "p: 503", 0, 0)
    assert d.delay == 0.5 * 2.0 * 2**2


def test_retry_after_is_a_floor():
    d = _decide(Outcome.retry("429", retry_after=120.0), attempt=1, rand=0.1)
    assert d.delay == 120.0


def test_retry_after_beyond_a_day_or_not_a_number_is_bounded():
    # "Retry-After: inf" parses as a float; now() + inf could not be stored at all.
    for value, expected in (
        (float("inf"), MAX_RETRY_AFTER_SECONDS),
        (1e300, MAX_RETRY_AFTER_SECONDS),
        (float("nan"), 0.5 * 2.0),
        (-5.0, 0.5 * 2.0),
    ):
        assert _decide(Outcome.retry("429", retry_after=value)).delay == expected


def test_exhausted_goes_dead_with_last_error():
    d = _decide(Outcome.retry("503 Service Unavailable"), attempt=5, max_attempts=5)
    assert (d.status, d.kind) == ("dead", "dead")
    assert d.error == "attempts exhausted (5/5): p: 503 Service Unavailable"


def test_unknown_is_retried_and_counted_in_doubt():
    d = _decide(Outcome.unknown("timeout"))
    assert (d.status, d.in_doubt) == ("pending", 1)


def test_permanent_and_dead_destination():
    assert _decide(Outcome.permanent("bad payload")).status == "dead"
    d = _decide(Outcome.dead_destination("Unregistered"))
    assert (d.status, d.dead_destination, d.error) == ("dead", True, "p: Unregistered")


def test_config_pauses_without_burning_the_attempt():
    d = _decide(Outcome.config("401 bad key"), attempt=5, max_attempts=5)
    assert (d.status, d.refund, d.delay) == ("pending", 1, 60.0)


def test_retry_after_expiry_expires_instead():
    d = _decide(Outcome.retry("503", retry_after=300), expires_at=NOW + timedelta(seconds=60))
    assert (d.status, d.kind) == ("expired", "expired")
    assert "last error: p: 503" in d.error


@given(
    attempt=st.integers(1, 60),
    rand=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 10_000),
)
def test_retry_delay_bounds(attempt, rand, retry_after):
    d = _decide(
        Outcome.retry("x", retry_after=retry_after), attempt=attempt, max_attempts=100, rand=rand
    )
    bound = min(POLICY.cap_seconds, POLICY.base_seconds * 2 ** (attempt - 1))
    assert d.status == "pending"
    assert max(0.0, retry_after or 0.0) <= d.delay <= max(bound, retry_after or 0.0)


def test_any_failure_after_expiry_is_expired():
    past = NOW - timedelta(seconds=1)
    d = _decide(Outcome.permanent("expired at the provider"), expires_at=past)
    assert (d.status, d.kind) == ("expired", "expired")
    d = _decide(Outcome.dead_destination("Unregistered"), expires_at=past)
    assert (d.status, d.dead_destination) == ("expired", True)
    assert _decide(Outcome.sent("x"), expires_at=past).status == "sent"


def test_an_adapter_refusing_for_lack_of_time_means_expired():
    soon = NOW + timedelta(milliseconds=500)
    d = _decide(
        Outcome.permanent("expired at ... before it was sent", error="expired"), expires_at=soon
    )
    assert (d.status, d.kind) == ("expired", "expired")


def test_default_quiet_hours_setting_is_parsed_or_refused():
    from datetime import time

    import pytest

    from outbox.workers.config import WorkerConfig

    assert WorkerConfig.parse_quiet_hours("22:00-07:00") == (time(22), time(7))
    assert WorkerConfig.parse_quiet_hours(None) is None
    with pytest.raises(ValueError, match="22:00-07:00, got 'tonight'"):
        WorkerConfig.parse_quiet_hours("tonight")


# --- never send late: the one rule, and what is built from it -------------------------


def test_past_expiry_is_inclusive_and_no_expiry_never_expires():
    from outbox.schedule import past_expiry

    assert past_expiry(NOW, NOW)  # due "until 12:00" is not sent at 12:00
    assert past_expiry(NOW, NOW + timedelta(microseconds=1))
    assert not past_expiry(NOW, NOW - timedelta(microseconds=1))
    assert not past_expiry(None, datetime.max.replace(tzinfo=UTC))


def test_a_wait_that_ends_at_expiry_expires_instead():
    from outbox.workers.decide import Decision, deferred_unless_expired

    expires = NOW + timedelta(seconds=10)
    d = deferred_unless_expired(expires, NOW, 10.0, "rate limit", "expires first", limit="x")
    assert d == Decision.expired("expires first")
    assert (d.status, d.kind, d.error, d.refund) == ("expired", "expired", "expires first", 0)
    d = deferred_unless_expired(expires, NOW, 9.999, "rate limit", "expires first", limit="x")
    assert (d.status, d.kind, d.refund, d.detail["limit"]) == ("pending", "deferred", 1, "x")
    assert deferred_unless_expired(None, NOW, 1e9, "quiet hours", "-").kind == "deferred"


def test_a_retry_due_exactly_at_expiry_expires():
    d = _decide(Outcome.retry("503", retry_after=60), expires_at=NOW + timedelta(seconds=60))
    assert (d.status, d.kind, d.in_doubt) == ("expired", "expired", 0)
