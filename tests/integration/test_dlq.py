"""outbox.dlq against a real PostgreSQL: filters, and the actor in requeue and purge events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from outbox import dlq
from outbox.cli import _register, app
from outbox.errors import ValidationError
from tests.integration.console_helpers import dead_letters, events, status


@pytest.fixture
def dead(conn, db_url):
    return dead_letters(conn, db_url)


def test_purge_needs_a_filter_and_changes_nothing_without_one(conn, dead):
    with pytest.raises(ValidationError, match="purge needs a filter") as caught:
        dlq.purge(conn, actor="test")
    assert caught.value.field == "filter"
    conn.rollback()
    assert all(status(conn, i) == "dead" for i in dead.values())


def test_purge_of_everything_goes_through_the_definer_function_and_needs_no_filter(conn, dead):
    """``everything`` passes the SQL function's own filter check (died before the end of time)."""
    assert dlq.purge(conn, actor="test", everything=True) == len(dead)
    conn.commit()
    assert all(status(conn, i) is None for i in dead.values())


def test_the_sql_purge_function_refuses_a_call_without_a_filter(conn, dead):
    with pytest.raises(Exception, match="give at least one filter") as caught:
        conn.execute("SELECT outbox.purge_dead()")
    assert caught.value.sqlstate == "OB001"
    conn.rollback()
    assert all(status(conn, i) == "dead" for i in dead.values())


def test_purge_leaves_one_event_naming_the_actor_and_the_callers_detail(conn, dead):
    delivery = dead["order-1"]
    n = dlq.purge(conn, actor="ops:bob", detail={"ticket": "INC-7"}, delivery_ids=[delivery])
    conn.commit()
    assert n == 1 and status(conn, delivery) is None
    assert events(conn, delivery, "cancelled") == [
        (
            "ops:bob",
            {
                "purged": True,
                "channel": "email",
                "previous_error": "sandbox-mail: 550 mailbox unavailable",
                "ticket": "INC-7",
            },
        )
    ]
    assert [k for (k,) in conn.execute(
        "SELECT kind FROM outbox.events WHERE delivery_id = %s", [delivery]
    )] == ["cancelled"]  # fmt: skip
    # The other dead letter is untouched.
    assert status(conn, next(i for i in dead.values() if i != delivery)) == "dead"


def test_the_provider_filter_applies_to_list_requeue_and_purge(conn, dead):
    assert dlq.list_dead(conn, provider="twilio") == []
    assert len(dlq.list_dead(conn, provider="sandbox-mail")) == 2
    assert dlq.requeue(conn, actor="t", provider="twilio") == 0
    assert dlq.purge(conn, actor="t", provider="twilio") == 0
    assert dlq.requeue(conn, actor="t", provider="sandbox-mail", reason="550") == 1
    conn.commit()
    assert status(conn, dead["order-1"]) == "pending"


def test_cli_purge_records_who_purged(conn, db_url, dead):
    if not any(c.name == "status" for c in app.registered_commands):
        _register()
    # Make them look old enough for --older-than.
    conn.execute(
        "UPDATE outbox.deliveries SET finished_at = %s WHERE status = 'dead'",
        [datetime.now(UTC) - timedelta(days=40)],
    )
    conn.commit()
    result = CliRunner().invoke(
        app, ["dlq", "purge", "--older-than", "30d"], env={"OUTBOX_DATABASE_URL": db_url}
    )
    assert result.exit_code == 0, result.output
    assert "purged 2 dead deliveries" in result.output
    for delivery in dead.values():
        [(worker, detail)] = events(conn, delivery, "cancelled")
        assert worker.startswith("cli") and detail["purged"] is True
