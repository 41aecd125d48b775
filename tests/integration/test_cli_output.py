"""The read commands at 80 columns, piped and on a terminal, and their --json (parsed back)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from outbox.cli import _register, app
from tests import factories

TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
REASON = (
    "apns: 410 Unregistered: the device token is no longer active for the topic "
    "com.example.shop (the app was uninstalled or the user turned notifications off); "
    "device deactivated"
)
PROVIDER_ID = "apns-0f9e8d7c-6b5a-4321-8fed-cba987654321"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = re.compile("[│┃┏┓┗┛┡┩┠┨━─└┘┌┐╇┳┻╋]")


def _cli(db_url: str, *args: str, columns: int = 80, terminal: bool = False):
    if not any(c.name == "status" for c in app.registered_commands):
        _register()
    env = {"OUTBOX_DATABASE_URL": db_url, "COLUMNS": str(columns)}
    if terminal:
        env["FORCE_COLOR"] = "1"  # rich then treats the runner's stdout as a terminal
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return ANSI.sub("", result.output)


@pytest.fixture
def dead_push(conn):
    """sale-4: its push delivery died at APNs with a long reason; email sent, sms pending."""
    factories.recipient(conn, "user-4", email="four@example.com", phone="+14155550104")
    factories.device(conn, "user-4", "apns", TOKEN)
    factories.templates(conn)
    conn.commit()
    factories.enqueue_committed(conn, "sale-4", recipient="user-4")
    conn.execute(
        """UPDATE outbox.deliveries SET status = 'dead', attempts = 5, provider = 'apns',
                  provider_message_id = %s, last_error = %s, finished_at = now()
           WHERE channel = 'push'""",
        [PROVIDER_ID, REASON],
    )
    conn.commit()
    return conn.execute("SELECT id FROM outbox.deliveries WHERE channel = 'push'").fetchone()[0]


def _value(text: str, block: str, name: str) -> str:
    """A value of a ``name  value`` block, its folded lines joined back."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(block))
    for i in range(start + 1, len(lines)):
        cells = BOX.sub(" ", lines[i]).split(maxsplit=len(name.split()))
        if cells[: len(name.split())] == name.split():
            parts = [cells[-1].strip()]
            indent = len(lines[i]) - len(lines[i].lstrip())
            for more in lines[i + 1 :]:
                # A folded continuation: nothing in the name column, deeper than the names.
                if more[: indent + len(name) + 1].strip():
                    break
                parts.append(BOX.sub(" ", more).strip())
            return " ".join(p for p in parts if p)
    raise AssertionError(f"no {name!r} in {block!r}:\n{text}")


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_inspect_at_80_columns_shows_whole_ids_and_the_whole_reason(db_url, dead_push, terminal):
    text = _cli(db_url, "inspect", "sale-4", terminal=terminal)
    block = f"delivery {dead_push} (push, dead"
    assert block in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert _value(text, block, "status") == "dead"
    assert _value(text, block, "provider") == "apns"
    assert _value(text, block, "destination") == TOKEN  # one line, not folded
    assert _value(text, block, "provider id") == PROVIDER_ID
    assert _value(text, block, "last error") == REASON
    assert bool(BOX.search(text)) is terminal  # box art only on a terminal


def test_status_dlq_and_templates_fit_80_columns(db_url, dead_push):
    for args in (("status",), ("dlq", "list"), ("templates", "list")):
        for terminal in (False, True):
            text = _cli(db_url, *args, terminal=terminal)
            assert all(len(line) <= 80 for line in text.splitlines()), (args, text)
    dead = _cli(db_url, "dlq", "list")
    # Eight columns do not fit 80: one block per dead delivery, nothing cut.
    assert _value(dead, f"delivery {dead_push}", "destination") == TOKEN
    assert _value(dead, f"delivery {dead_push}", "reason") == REASON
    wide = _cli(db_url, "dlq", "list", columns=250)
    row = next(line for line in wide.splitlines() if line.startswith(str(dead_push)))
    assert row.split()[:6] == [str(dead_push), "sale-4", "push", TOKEN, "apns", "5"]


def _utc(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0, text
    return at


def test_json_of_every_read_command_parses_with_numbers_and_iso_times(db_url, dead_push):
    found = json.loads(_cli(db_url, "inspect", "sale-4", "--json"))
    push = next(d for d in found["deliveries"] if d["channel"] == "push")
    assert push["id"] == dead_push and isinstance(push["id"], int)
    assert (push["status"], push["last_error"], push["destination"]) == ("dead", REASON, TOKEN)
    assert _utc(push["finished_at"]) <= datetime.now(UTC)
    assert found["notification"]["data"] == {"order": "…"}  # hidden, as in the tables
    assert all(isinstance(e["id"], int) and _utc(e["at"]) for e in found["timeline"])

    status = json.loads(_cli(db_url, "status", "--json"))
    assert [(r["channel"], r["dead"]) for r in status["dead"]] == [("push", 1)]
    _utc(status["dead"][0]["newest"])

    dead = json.loads(_cli(db_url, "dlq", "list", "--json"))
    assert [(r["delivery_id"], r["message_id"], r["reason"]) for r in dead] == [
        (dead_push, "sale-4", REASON)
    ]
    assert set(dead[0]) == {
        "delivery_id",
        "message_id",
        "channel",
        "destination",
        "provider",
        "attempts",
        "reason",
        "died_at",
    }
    _utc(dead[0]["died_at"])

    templates = json.loads(_cli(db_url, "templates", "list", "--json"))
    assert [(t["key"], t["channel"], t["active"], t["versions"]) for t in templates] == [
        ("order_confirmed", c, 1, 1)
        for c in ("email", "sms", "push")  # the enum's order
    ]
    _utc(templates[0]["updated_at"])

    shown = json.loads(_cli(db_url, "templates", "show", "order_confirmed", "--json"))
    sms = next(v for v in shown if v["channel"] == "sms")
    assert (sms["version"], sms["active"]) == (1, True)
    assert sms["body"] == "Order {{ order }} is confirmed."
    _utc(sms["created_at"])
