"""Circuit breaker rules (outbox.workers.breaker.rules): pure functions, clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outbox.workers.breaker.rules import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerPolicy,
    Tally,
    claim_probe,
    may_send,
    record,
    tally,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy(
    failure_threshold=3, cooldown_seconds=10, cooldown_cap_seconds=35, probe_seconds=5
)


def _after(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _rec(b: Breaker, t: Tally, worker: str = "w1", at: float = 0) -> Breaker:
    return record(b, t, worker=worker, now=_after(at), policy=POLICY)


def _opened(at: float = 0) -> Breaker:
    return _rec(Breaker(), Tally(failures=3, reason="503"), at=at)


# -- tally ---------------------------------------------------------------------------


def test_tally_counts_only_the_failures_after_the_last_success():
    t = tally([("retry", "a"), ("sent", None), ("unknown", "b"), ("retry", "c")])
    assert t == Tally(successes=1, failures=2, configs=0, reason="c")


def test_tally_treats_a_provider_that_said_no_as_working():
    # permanent / dead_destination: the provider understood the request.
    t = tally([("retry", "x"), ("permanent", "too big"), ("dead_destination", "gone")])
    assert (t.successes, t.failures, t.failed) == (2, 0, False)


def test_tally_config_reason_wins_and_configs_count_anywhere():
    t = tally([("config", "401 bad key"), ("sent", None), ("retry", "503")])
    assert (t.configs, t.failures, t.reason, t.failed) == (1, 1, "401 bad key", True)


# -- closed ----------------------------------------------------------------------------


def test_consecutive_failures_open_at_the_threshold():
    b = _rec(Breaker(), Tally(failures=2, reason="503"))
    assert (b.state, b.failures, b.reason) == (CLOSED, 2, "503")
    b = _rec(b, Tally(failures=1, reason="timeout"), at=4)
    assert (b.state, b.failures, b.trips) == (OPEN, 3, 1)
    assert (b.opened_at, b.retry_at, b.reason) == (_after(4), _after(14), "timeout")


def test_a_success_resets_the_count():
    b = _rec(Breaker(), Tally(failures=2))
    b = _rec(b, Tally(successes=1, failures=1))  # the batch's last failure came after a success
    assert (b.state, b.failures) == (CLOSED, 1)
    b = _rec(b, Tally(successes=5))
    assert (b.state, b.failures) == (CLOSED, 0)


def test_one_config_outcome_opens_at_once():
    b = _rec(Breaker(), Tally(successes=10, configs=1, reason="401 bad key"))
    assert (b.state, b.trips, b.reason, b.retry_at) == (OPEN, 1, "401 bad key", _after(10))


# -- open ------------------------------------------------------------------------------


def test_results_while_open_change_nothing():
    b = _opened()
    assert _rec(b, Tally(successes=4)) == b
    assert _rec(b, Tally(failures=9, configs=1, reason="x"), at=3) == b


def test_probe_is_claimed_only_after_the_cool_down_and_by_one_worker():
    b = _opened()
    assert claim_probe(b, worker="w2", now=_after(9.999), policy=POLICY) == b
    probing = claim_probe(b, worker="w2", now=_after(10), policy=POLICY)
    assert (probing.state, probing.probe_owner, probing.probe_expires_at) == (
        HALF_OPEN,
        "w2",
        _after(15),
    )
    # Another worker asking meanwhile changes nothing...
    assert claim_probe(probing, worker="w3", now=_after(14), policy=POLICY) == probing
    # ...until the claim expires (the owner died or had no traffic for this provider).
    taken = claim_probe(probing, worker="w3", now=_after(15), policy=POLICY)
    assert (taken.probe_owner, taken.probe_expires_at) == ("w3", _after(20))
    assert claim_probe(Breaker(), worker="w2", now=_after(100), policy=POLICY) == Breaker()


def test_may_send():
    probing = claim_probe(_opened(), worker="w2", now=_after(10), policy=POLICY)
    assert may_send(Breaker(), "w1")
    assert not may_send(_opened(), "w1")
    assert may_send(probing, "w2") and not may_send(probing, "w1")


# -- half open -------------------------------------------------------------------------


def test_a_successful_probe_closes_it():
    probing = claim_probe(_opened(), worker="w2", now=_after(10), policy=POLICY)
    closed = _rec(probing, Tally(successes=1), worker="w2", at=11)
    assert closed == Breaker(state=CLOSED, reason="503")


def test_a_failed_probe_reopens_with_a_doubled_capped_cool_down():
    b = _opened()
    retry_ats = []
    at = 0.0
    for _ in range(4):
        at = (b.retry_at - T0).total_seconds()
        b = claim_probe(b, worker="w2", now=_after(at), policy=POLICY)
        b = _rec(b, Tally(failures=1, reason="still 503"), worker="w2", at=at)
        retry_ats.append((b.retry_at - _after(at)).total_seconds())
    assert retry_ats == [20, 35, 35, 35]  # 10 * 2^(trips-1), capped at 35
    assert (b.state, b.trips, b.reason, b.opened_at) == (OPEN, 5, "still 503", _after(at))


def test_a_config_outcome_fails_the_probe():
    probing = claim_probe(_opened(), worker="w2", now=_after(10), policy=POLICY)
    b = _rec(probing, Tally(successes=1, configs=1, reason="403"), worker="w2", at=10)
    assert (b.state, b.trips, b.reason) == (OPEN, 2, "403")


def test_only_the_probe_owner_decides():
    probing = claim_probe(_opened(), worker="w2", now=_after(10), policy=POLICY)
    assert _rec(probing, Tally(successes=3), worker="w1", at=11) == probing
    assert _rec(probing, Tally(failures=3), worker="w1", at=11) == probing


# -- policy ----------------------------------------------------------------------------


def test_cool_down_schedule_is_bounded():
    p = BreakerPolicy(cooldown_seconds=30, cooldown_cap_seconds=600)
    assert [p.cooldown(t) for t in (0, 1, 2, 3, 4, 5, 6, 10_000)] == [
        30,
        30,
        60,
        120,
        240,
        480,
        600,
        600,
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"failure_threshold": 0}, "failure_threshold must be at least 1, got 0"),
        ({"cooldown_seconds": 0}, "cooldown_seconds must be positive, got 0"),
        ({"probe_seconds": -1}, "probe_seconds must be positive, got -1"),
        (
            {"cooldown_seconds": 60, "cooldown_cap_seconds": 30},
            "cooldown_cap_seconds (30) must be at least",
        ),
    ],
)
def test_policy_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BreakerPolicy(**kwargs)
