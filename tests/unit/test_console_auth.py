"""The console's session cookies and tokens (outbox/console/auth.py): pure, clock passed in."""

from __future__ import annotations

import pytest

from outbox.console.auth import AuthError, LoginLimiter, Sessions, check_operator, same

TOKEN = "unit-test-console-token"


def test_a_session_round_trips_until_it_expires():
    sessions = Sessions(TOKEN, lifetime_seconds=60)
    cookie, session = sessions.issue("alice", now=1000.0)
    assert sessions.read(cookie, now=1059.0) == session
    assert session.operator == "alice" and len(session.csrf) >= 32
    assert sessions.read(cookie, now=1060.0) is None


def test_a_tampered_foreign_or_malformed_cookie_reads_as_no_session():
    sessions = Sessions(TOKEN, lifetime_seconds=60)
    cookie, _ = sessions.issue("alice", now=0.0)
    payload, signature = cookie.split(".")
    other, _ = Sessions("another-token", 60).issue("alice", now=0.0)
    for value in (
        None,
        "",
        "no-dot",
        "a.b.c",
        f"{payload}.{signature[::-1]}",
        f"{payload[:-1]}A.{signature}",
        other,
        f"{payload}.é",
        "x" * 2000 + "." + signature,
    ):
        assert sessions.read(value, now=1.0) is None, value


def test_the_token_check_and_csrf_comparison():
    sessions = Sessions(TOKEN, lifetime_seconds=60)
    assert sessions.token_ok(TOKEN)
    assert not sessions.token_ok(TOKEN + "x") and not sessions.token_ok("")
    assert TOKEN not in repr(sessions)
    assert same("abc", "abc") and not same("abd", "abc") and not same(None, "abc")
    with pytest.raises(ValueError):
        Sessions("", 60)


@pytest.mark.parametrize("name", ["alice", "bob.smith", "ops@example.com", "łukasz", "a-b_c+1"])
def test_operator_names_that_go_into_the_audit_trail(name):
    assert check_operator(f"  {name} ") == name


@pytest.mark.parametrize("name", ["", " ", "a b", "<script>", "x" * 65, "a\nb", "a;b"])
def test_operator_names_refused(name):
    with pytest.raises(AuthError, match="operator:"):
        check_operator(name)


def test_wrong_tokens_are_limited_per_address_within_the_window():
    limiter = LoginLimiter(failures=3, window_seconds=60, max_addresses=100)
    for t in (0.0, 1.0, 2.0):
        assert limiter.wait("10.0.0.1", now=t) == 0
        limiter.failed("10.0.0.1", now=t)
    assert limiter.wait("10.0.0.1", now=3.0) == 57.0  # until the first failure leaves
    assert limiter.wait("10.0.0.2", now=3.0) == 0  # another address is not held back
    assert limiter.wait("10.0.0.1", now=60.0) == 0  # the window moved on
    limiter.failed("10.0.0.1", now=60.5)  # with those at 1 and 2: three again
    assert limiter.wait("10.0.0.1", now=60.75) == 0.25
    limiter.succeeded("10.0.0.1")
    assert limiter.wait("10.0.0.1", now=60.75) == 0


def test_the_limiter_remembers_a_bounded_number_of_addresses():
    limiter = LoginLimiter(failures=1, window_seconds=60, max_addresses=3)
    for i in range(10):
        limiter.failed(f"10.0.0.{i}", now=0.0)
    assert [limiter.wait(f"10.0.0.{i}", now=1.0) > 0 for i in range(10)] == [False] * 7 + [True] * 3
