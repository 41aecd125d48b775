"""The README's first command: `outbox demo` runs end to end, and again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_twice(server_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update({"OUTBOX_DATABASE_URL": server_url, "OUTBOX_DATA_DIR": str(tmp_path)})
    database = f"outbox_demo_test_{os.getpid()}"
    command = [sys.executable, "-m", "outbox", "demo", "--recipients", "20", "--marketing", "40",
               "--otps", "5", "--reminders", "5", "--duration", "120", "--database", database]
    try:
        for _ in range(2):
            run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            out = run.stdout
            assert "everything finished" in out
            assert "how it ended, per channel and provider" in out
            assert "device deactivated" in out and "deadbeef" in out
            assert "delivered" in out and "Where to look next" in out
    finally:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        admin = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": "postgres"})
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
