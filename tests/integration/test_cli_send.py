"""``outbox send``: one-off notifications and broadcasts, piped and on a terminal, and
its mistakes (one ``error:`` line, exit 1; a value that does not parse, exit 2)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import outbox
from outbox.cli import _register, app
from tests import factories

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def send(db_url):
    """send(*args, terminal=False) -> the result of `outbox send args`."""
    _register()

    def invoke(*args: str, terminal: bool = False):
        env = {"OUTBOX_DATABASE_URL": db_url, "COLUMNS": "100"}
        if terminal:
            env["FORCE_COLOR"] = "1"  # rich then treats the runner's streams as a terminal
        return CliRunner().invoke(app, ["send", *args], env=env)

    return invoke


@pytest.fixture
def club(conn):
    """Topic 'club' with five subscribers (m1..m5, email only), template 'promo'."""
    factories.templates(conn, "promo", ("email",))
    outbox.create_topic(conn, "club")
    for i in range(1, 6):
        factories.recipient(conn, f"m{i}", phone=None)
        outbox.subscribe(conn, f"m{i}", "club")
    conn.commit()
    return conn


def _count(conn, broadcast: str) -> int:
    conn.rollback()
    return conn.execute(
        "SELECT count(*) FROM outbox.notifications n JOIN outbox.broadcasts b"
        " ON b.id = n.broadcast_id WHERE b.message_id = %s",
        [broadcast],
    ).fetchone()[0]


def test_a_one_off_to_a_recipient_and_to_an_address(send, club):
    result = send("--to", "m1", "--template", "promo", "--data", '{"x": 1}', "--message-id", "one")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("enqueued one (notification ") and "outbox inspect one" in (
        result.stdout
    )
    result = send("--address", "ada@example.com", "--template", "promo", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    club.rollback()
    row = club.execute(
        "SELECT n.data, d.destination FROM outbox.notifications n JOIN outbox.deliveries d"
        " ON d.notification_id = n.id WHERE n.message_id = %s",
        [shown["message_id"]],
    ).fetchone()
    assert row == ({}, "ada@example.com")
    assert shown["message_id"].startswith("send-")


def test_a_topic_broadcast_in_chunks_piped_then_rerun(send, club):
    result = send("--topic", "club", "--template", "promo", "--message-id", "b1", "--chunk", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "broadcast b1: 5 recipients, 5 enqueued, 0 already had it, 0 unreachable, 0 unknown"
        " (3 chunks, "
    )
    # Off a terminal: one plain line per chunk on stderr, no bar, no colour.
    assert result.stderr.splitlines() == [
        "chunk: 2 recipients, 2 enqueued (2/5 done)",
        "chunk: 2 recipients, 2 enqueued (4/5 done)",
        "chunk: 1 recipients, 1 enqueued (5/5 done)",
    ]
    assert _count(club, "b1") == 5
    factories.recipient(club, "m6", phone=None)
    outbox.subscribe(club, "m6", "club")
    club.commit()
    again = send("--topic", "club", "--template", "promo", "--message-id", "b1", "--json")
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)
    assert (counts["targets"], counts["enqueued"], counts["already"]) == (6, 1, 5)
    assert _count(club, "b1") == 6


def test_a_broadcast_on_a_terminal_shows_a_progress_bar(send, club):
    result = send("--topic", "club", "--template", "promo", "--chunk", "2", terminal=True)
    assert result.exit_code == 0, result.output
    bar = ANSI.sub("", result.stderr)
    assert "broadcast" in bar and "5/5" in bar and "5 enqueued" in bar
    assert "chunk:" not in bar


def test_a_segment_and_a_list(send, club):
    segment = "SELECT external_id FROM outbox.recipients WHERE external_id IN ('m1', 'm2');"
    result = send("--segment", segment, "--template", "promo", "--message-id", "s1")
    assert result.exit_code == 0, result.output
    assert "2 recipients, 2 enqueued" in result.stdout
    result = send("--to", "m3", "--to", "nobody", "--template", "promo", "--message-id", "l1")
    assert result.exit_code == 0, result.output
    assert "2 recipients, 1 enqueued, 0 already had it, 0 unreachable, 1 unknown" in result.stdout
    assert (_count(club, "s1"), _count(club, "l1")) == (2, 1)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "error: give exactly one of --to RECIPIENT, --address ADDRESS, --topic TOPIC"),
        (("--to", "m1", "--topic", "club"), "(got --to, --topic)"),
        (("--topic", "nope"), "error: outbox.broadcast: unknown topic 'nope'"),
        (
            ("--segment", "SELECT id FROM outbox.recipients"),
            "error: outbox.broadcast_segment: segment returns bigint",
        ),
        (("--to", "ghost"), "error: outbox.enqueue: unknown recipient 'ghost'"),
    ],
)
def test_mistakes_are_one_line_and_exit_1(send, club, args, says):
    result = send(*args, "--template", "promo")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    club.rollback()
    assert club.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--data", "{oops"), "is not JSON"),
        (("--data", "[1]"), "must be a JSON object"),
        (("--send-at", "2026-12-24T09:00"), "has no time zone"),
        (("--chunk", "0"), "--chunk"),
    ],
)
def test_values_that_do_not_parse_are_usage_errors(send, club, args, says):
    result = send("--topic", "club", "--template", "promo", *args)
    assert result.exit_code == 2, result.output
    assert says in result.stderr
