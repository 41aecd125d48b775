"""Admission at send time, through the real worker: quiet hours, opt-outs, suppressions, critical.

The worker's clock is injected (quiet hours are judged by it); the database's own
clock still decides what is due, so every delivery enqueued here is due at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

import pytest

import outbox
from outbox.workers.config import WorkerConfig
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker

QUIET = (time(22, 0), time(7, 0))


def _drain(worker, rounds: int = 20) -> None:
    async def go():
        try:
            for _ in range(rounds):
                if await worker.run_once() == 0:
                    return
        finally:
            await worker.close()

    asyncio.run(go())


def _at(instant: datetime):
    return lambda: instant


def _delivery(conn, message_id: str, channel: str | None = None):
    """(status, attempts, seconds from the last update to the next attempt, last_error)."""
    return conn.execute(
        """
        SELECT d.status::text, d.attempts,
               extract(epoch FROM d.next_attempt_at - d.updated_at)::float8, d.last_error
        FROM outbox.deliveries d JOIN outbox.notifications n ON n.id = d.notification_id
        WHERE n.message_id = %s AND (%s::text IS NULL OR d.channel::text = %s)""",
        (message_id, channel, channel),
    ).fetchone()


def _last_event(conn, message_id: str):
    return conn.execute(
        """
        SELECT e.kind, e.detail FROM outbox.events e
        JOIN outbox.notifications n ON n.id = e.notification_id
        WHERE n.message_id = %s ORDER BY e.id DESC LIMIT 1""",
        (message_id,),
    ).fetchone()


@pytest.fixture
def sms(conn):
    """An SMS template and a critical category."""
    factories.templates(conn, channels=("sms",))
    conn.execute("INSERT INTO outbox.categories (name, critical) VALUES ('security', true)")
    conn.commit()
    return conn


def _person(conn, name: str, tz: str, quiet=QUIET) -> str:
    factories.recipient(conn, name, timezone=tz, quiet_hours=quiet)
    conn.commit()
    return name


def _send(conn, message_id: str, recipient: str, **kw) -> None:
    outbox.enqueue(
        conn,
        message_id,
        recipient=recipient,
        template="order_confirmed",
        data={"order": 1},
        channels=["sms"],
        **kw,
    )
    conn.commit()


# --- quiet hours ----------------------------------------------------------------------


# (worker clock, recipient's zone, end of the 22:00-07:00 window it falls in)
DST_CASES = [
    # New York, spring forward (2026-03-08, 02:00 EST -> 03:00 EDT): at 01:30 EST the
    # window ends at 07:00 EDT, 4.5 hours later, not 5.5.
    (
        datetime(2026, 3, 8, 6, 30, tzinfo=UTC),
        "America/New_York",
        datetime(2026, 3, 8, 11, 0, tzinfo=UTC),
    ),
    # New York, fall back (2026-11-01, 02:00 EDT -> 01:00 EST): at the first 01:00 the
    # window ends at 07:00 EST, 7 hours later, not 6.
    (
        datetime(2026, 11, 1, 5, 0, tzinfo=UTC),
        "America/New_York",
        datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
    ),
    # Paris, spring forward (2026-03-29, 02:00 CET -> 03:00 CEST): 01:30 CET -> 07:00 CEST.
    (
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        "Europe/Paris",
        datetime(2026, 3, 29, 5, 0, tzinfo=UTC),
    ),
    # Tokyo has no DST: 23:00 JST -> 07:00 JST.
    (
        datetime(2026, 3, 8, 14, 0, tzinfo=UTC),
        "Asia/Tokyo",
        datetime(2026, 3, 8, 22, 0, tzinfo=UTC),
    ),
]


def test_quiet_hours_defer_to_the_end_of_the_window_in_the_recipients_zone(sms, db_url):
    provider = ScriptedProvider()
    for i, (now, tz, window_end) in enumerate(DST_CASES):
        _person(sms, f"sleeper-{i}", tz)
        _send(sms, f"m-{i}", f"sleeper-{i}")
        _drain(make_worker(db_url, provider, clock=_at(now)))
        assert provider.calls == []
        status, attempts, delay, _ = _delivery(sms, f"m-{i}")
        assert (status, attempts) == ("pending", 0)  # deferred, and the attempt not counted
        assert delay == (window_end - now).total_seconds(), (now, tz)
        kind, detail = _last_event(sms, f"m-{i}")
        assert kind == "deferred"
        assert detail["reason"] == "quiet hours"
        assert datetime.fromisoformat(detail["until"]) == window_end


def test_quiet_hours_are_judged_in_each_recipients_own_zone(sms, db_url):
    # 06:30 UTC on the US spring-forward day: 01:30 in New York (quiet), 07:30 in
    # Paris (over), 15:30 in Tokyo (day), 22:30 in Los Angeles the evening before (quiet).
    now = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    for name, tz in [
        ("ny", "America/New_York"),
        ("paris", "Europe/Paris"),
        ("tokyo", "Asia/Tokyo"),
        ("la", "America/Los_Angeles"),
    ]:
        _person(sms, name, tz)
        _send(sms, f"m-{name}", name)
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider, clock=_at(now)))
    assert sorted(m.message_id for m in provider.calls) == ["m-paris", "m-tokyo"]
    assert _delivery(sms, "m-ny")[:3] == ("pending", 0, 4.5 * 3600)
    # Los Angeles springs forward that night too: 22:30 PST -> 07:00 PDT is 7.5 hours, not 8.5.
    assert _delivery(sms, "m-la")[:3] == ("pending", 0, 7.5 * 3600)


def test_critical_bypasses_quiet_hours(sms, db_url):
    _person(sms, "sleeper", "America/New_York")
    _send(sms, "otp", "sleeper", category="security")
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider, clock=_at(datetime(2026, 3, 8, 6, 30, tzinfo=UTC))))
    assert [m.message_id for m in provider.calls] == ["otp"]
    assert _delivery(sms, "otp")[:2] == ("sent", 1)


def test_expiry_wins_over_quiet_hours(sms, db_url):
    _person(sms, "sleeper", "UTC")
    # Its worker clock says 23:00 UTC: quiet until 07:00, but it expires long before.
    now = datetime.now(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
    _send(sms, "m-1", "sleeper", expires_at=datetime.now(UTC) + timedelta(hours=1))
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider, clock=_at(now)))
    assert provider.calls == []
    status, _, _, error = _delivery(sms, "m-1")
    assert (status, error) == ("expired", "expires before the recipient's quiet hours end")


def test_after_the_window_it_is_sent(sms, db_url):
    _person(sms, "sleeper", "America/New_York")
    _send(sms, "m-1", "sleeper")
    provider = ScriptedProvider()
    night = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    _drain(make_worker(db_url, provider, clock=_at(night)))
    sms.execute("UPDATE outbox.deliveries SET next_attempt_at = now()")
    sms.commit()
    _drain(make_worker(db_url, provider, clock=_at(datetime(2026, 3, 8, 11, 0, tzinfo=UTC))))
    assert [m.message_id for m in provider.calls] == ["m-1"]
    assert _delivery(sms, "m-1")[:2] == ("sent", 1)


# --- opt-outs and suppressions at send time ------------------------------------------


def test_opt_out_at_enqueue_is_honoured(sms, db_url):
    factories.recipient(sms, "quiet-person")
    outbox.set_preference(sms, "quiet-person", "sms", opted_in=False)
    sms.commit()
    _send(sms, "m-1", "quiet-person")
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert provider.calls == []
    assert _delivery(sms, "m-1")[::3] == ("suppressed", "opted out of sms")


def test_opt_out_made_after_enqueue_suppresses_at_send_time(sms, db_url):
    factories.recipient(sms, "changed-mind")
    _send(sms, "promo", "changed-mind", category="marketing")
    _send(sms, "receipt", "changed-mind", category="orders")
    _send(sms, "otp", "changed-mind", category="security")
    # After enqueue: out of marketing SMS only.
    outbox.set_preference(sms, "changed-mind", "sms", opted_in=False, category="marketing")
    sms.commit()
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert sorted(m.message_id for m in provider.calls) == ["otp", "receipt"]
    status, attempts, _, error = _delivery(sms, "promo")
    # Nothing was attempted: the claim's attempt is given back.
    assert (status, attempts, error) == ("suppressed", 0, "opted out of sms marketing")
    kind, detail = _last_event(sms, "promo")
    assert (kind, detail["reason"]) == ("suppressed", "opted out of sms marketing")


def test_critical_bypasses_an_opt_out_from_every_category(sms, db_url):
    factories.recipient(sms, "opted-out")
    _send(sms, "otp", "opted-out", category="security")
    _send(sms, "news", "opted-out")
    outbox.set_preference(sms, "opted-out", "sms", opted_in=False)  # '*': every category
    sms.commit()
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert [m.message_id for m in provider.calls] == ["otp"]
    assert _delivery(sms, "news")[::3] == ("suppressed", "opted out of sms")


def test_an_opt_in_again_before_sending_sends(sms, db_url):
    factories.recipient(sms, "flip-flop")
    _send(sms, "m-1", "flip-flop")
    outbox.set_preference(sms, "flip-flop", "sms", opted_in=False)
    outbox.set_preference(sms, "flip-flop", "sms", opted_in=True)
    sms.commit()
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert _delivery(sms, "m-1")[:2] == ("sent", 1)


def test_address_suppressed_after_enqueue_is_not_sent_even_when_critical(sms, db_url):
    who = factories.recipient(sms, "bounced", phone="+14155550199")
    _send(sms, "otp", who, category="security")
    sms.execute(
        "INSERT INTO outbox.suppressions (channel, destination, reason) "
        "VALUES ('sms', '+14155550199', 'twilio: 21610 STOP')"
    )
    sms.commit()
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert provider.calls == []
    assert _delivery(sms, "otp")[::3] == ("suppressed", "suppressed address: twilio: 21610 STOP")


def test_device_deactivated_after_enqueue_is_not_pushed(conn, db_url):
    factories.templates(conn, channels=("push",))
    factories.recipient(conn, "phone-owner")
    factories.device(conn, "phone-owner", "apns", "apns-token-dead-0001")
    factories.device(conn, "phone-owner", "fcm", "fcm-token-live-0002")
    outbox.enqueue(
        conn, "m-1", recipient="phone-owner", template="order_confirmed", data={"order": 1}
    )
    outbox.deactivate_device(conn, "apns-token-dead-0001", reason="apns: Unregistered")
    conn.commit()
    provider = ScriptedProvider()
    _drain(make_worker(db_url, provider))
    assert [m.destination for m in provider.calls] == ["fcm-token-live-0002"]
    rows = dict(
        conn.execute(
            "SELECT destination, last_error FROM outbox.deliveries WHERE status = 'suppressed'"
        ).fetchall()
    )
    assert rows == {"apns-token-dead-0001": "device deactivated: apns: Unregistered"}


def test_default_quiet_hours_apply_to_recipients_without_their_own(sms, db_url):
    """OUTBOX_DEFAULT_QUIET_HOURS: a recipient with no window of their own is held by the
    default one, in their own zone; a direct address (no known zone) is not."""
    provider = ScriptedProvider()
    _person(sms, "no-window", "Europe/Paris", quiet=None)
    _send(sms, "m-default", "no-window")
    outbox.enqueue(
        sms,
        "m-direct",
        address="+33612345678",
        template="order_confirmed",
        channels=["sms"],
        data={"order": 1},
    )
    sms.commit()
    night = datetime(2026, 6, 1, 21, 30, tzinfo=UTC)  # 23:30 in Paris (CEST)
    _drain(
        make_worker(
            db_url,
            provider,
            clock=_at(night),
            default_quiet_hours=WorkerConfig.parse_quiet_hours("22:00-07:00"),
        )
    )
    assert [m.message_id for m in provider.calls] == ["m-direct"]
    status, attempts, delay, _ = _delivery(sms, "m-default")
    assert (status, attempts) == ("pending", 0)
    assert delay == (datetime(2026, 6, 2, 5, 0, tzinfo=UTC) - night).total_seconds()
