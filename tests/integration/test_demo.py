"""The README's first command: `outbox demo` runs end to end, and again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytestmark = pytest.mark.slow


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(values)
    return env


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """The name of a database the demo may (re)create; dropped afterwards."""
    name = f"outbox_demo_test_{os.getpid()}"
    yield name
    admin = make_conninfo("", **{**conninfo_to_dict(server_url), "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _demo_command(database: str, **sizes: int) -> list[str]:
    options = {"recipients": 20, "marketing": 40, "otps": 5, "reminders": 5, **sizes}
    command = [sys.executable, "-m", "outbox", "demo", "--duration", "120", "--database", database]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    return command


def _unapplied_receipts(server_url: str, database: str) -> list[tuple[str, str, int]]:
    """Deliveries still 'sent' with a provider that sends receipts in the demo."""
    url = make_conninfo("", **{**conninfo_to_dict(server_url), "dbname": database})
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT channel::text, provider, count(*) FROM outbox.deliveries"
            " WHERE status = 'sent' AND provider IN ('sendgrid', 'twilio') GROUP BY 1, 2"
        ).fetchall()


def test_demo_runs_twice(server_url: str, database: str, tmp_path: Path) -> None:
    env = _clean_env(OUTBOX_DATABASE_URL=server_url, OUTBOX_DATA_DIR=str(tmp_path))
    for _ in range(2):
        run = subprocess.run(
            _demo_command(database), env=env, capture_output=True, text=True, timeout=240
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        out = run.stdout
        assert "everything finished" in out
        assert "how it ended, per channel and provider" in out
        assert "device deactivated" in out and "deadbeef" in out
        assert "delivered" in out and "Where to look next" in out
        # The demo waits for the receipts: every email and SMS that got one shows it.
        assert _unapplied_receipts(server_url, database) == []
        log = (tmp_path / "demo" / "demo.log").read_text()
        assert "receipt_failed" not in log and "receipt_failed" not in run.stderr

        # The closing hints run as printed, with nothing else set, against the demo's
        # database; the workers are gone by then, so their metrics URLs are not offered.
        hints = out[out.index("Where to look next") :]
        assert "/metrics" not in hints
        [inspect] = [line for line in hints.splitlines() if "inspect otp-0" in line]
        shown = subprocess.run(
            ["bash", "-c", inspect], env=_clean_env(), capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
        assert "notification otp-0" in shown.stdout


def test_demo_interrupted_stops_the_sandbox_before_the_receiver(
    server_url: str, database: str, tmp_path: Path
) -> None:
    env = _clean_env(OUTBOX_DATABASE_URL=server_url, OUTBOX_DATA_DIR=str(tmp_path))
    # Enough email that receipts are in flight when Ctrl-C comes.
    demo = subprocess.Popen(
        _demo_command(database, marketing=400),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("enqueued"):
                break
        log_file = tmp_path / "demo" / "demo.log"
        deadline = time.monotonic() + 60
        while "webhooks.accepted" not in log_file.read_text():
            assert time.monotonic() < deadline, "no receipt arrived"
            time.sleep(0.1)
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted" in out
    # A receipt still on its way was dropped with the sandbox, not sent to a closed port.
    log = log_file.read_text()
    assert "ConnectError" not in log and "receipt_failed" not in log
    assert "ConnectError" not in err
