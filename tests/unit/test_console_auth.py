"""The console's session cookies and tokens (outbox/console/auth.py): pure, clock passed in."""

from __future__ import annotations

import pytest

from outbox.console.auth import AuthError, Sessions, check_operator, same

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
