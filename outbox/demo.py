"""``outbox demo``: the whole flow end to end, on this machine, in about a minute.

A fresh ``outbox_demo`` database on the configured server (or the embedded
one), migrated; example recipients, devices and templates; the provider
sandbox with faults injected (transient errors, a dead device token, an
invalid number, a slow provider, timeouts); two worker processes; a realistic
mix enqueued (login codes with high priority and short expiry, appointment
reminders scheduled a few seconds ahead, a marketing batch at low priority);
live progress; and a summary a person can read at a glance.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import outbox
from outbox import migrate
from outbox.cli import output
from outbox.logs import configure
from outbox.sandbox import Sandbox
from outbox.settings import Settings
from outbox.sql import query
from outbox.webhooks import WebhookConfig, WebhookServer, WebhookThread, create_app
from outbox.webhooks.app import Receiver

DEMO_DATABASE = "outbox_demo"
CHANNELS = ("email", "sms", "push")
FINISHED = ("sent", "delivered", "dead", "expired", "suppressed", "cancelled")

# Planted so the run shows what happens to them.
DEAD_TOKEN = "deadbeef" * 8
INVALID_NUMBER = "+15005550001"

# Once every delivery is finished, how long the last receipts (a 'sent' email's
# 'delivered') get to arrive and be applied before the summary is printed.
RECEIPTS_GRACE_S = 30.0

LOCALES = [
    ("en", "Europe/London"),
    ("fr", "Europe/Paris"),
    ("fr-CA", "America/Montreal"),
    ("en-US", "America/New_York"),
    ("de", "Europe/Berlin"),
]


@dataclass
class DemoOptions:
    recipients: int = 150
    marketing: int = 600  # notifications in the marketing blast
    otps: int = 40
    reminders: int = 60
    workers: int = 2
    duration: float = 90.0  # at most this long, then stop whatever is left
    state_dir: Path = Path(".outbox/demo")
    database: str = DEMO_DATABASE  # dropped and created again on every run


@dataclass
class DemoRun:
    url: str
    started: float = field(default_factory=time.monotonic)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)
    enqueued: int = 0
    receipts_failed: int = 0  # receipts the sandbox gave up posting


def demo_database_url(server_url: str, name: str = DEMO_DATABASE) -> str:
    """Recreate the demo's own database ``name`` on the server of ``server_url``; return its URL."""
    params = conninfo_to_dict(server_url)
    admin = make_conninfo("", **{**params, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo("", **{**params, "dbname": name})


def load_examples(
    conn: psycopg.Connection[DictRow], opts: DemoOptions, rng: random.Random
) -> list[str]:
    """Templates, categories, recipients (with devices and some opt-outs). Returns recipient ids."""
    conn.execute(
        "INSERT INTO outbox.categories (name, critical, description) VALUES "
        "('security', true, 'login codes'), ('appointments', false, 'reminders'), "
        "('marketing', false, 'promotions')"
    )
    t = outbox.create_template
    t(conn, "login_code", "sms", "Your code is {{ code }}. It expires in 2 minutes.")
    t(
        conn,
        "login_code",
        "sms",
        "Votre code est {{ code }}. Il expire dans 2 minutes.",
        locale="fr",
    )
    t(conn, "login_code", "push", "Code {{ code }}", title="Sign-in code")
    t(
        conn,
        "appointment",
        "email",
        "Hello {{ name }},\nsee you on {{ when }} at {{ place }}.",
        subject="Reminder: {{ when }}",
        html_body="<p>Hello {{ name }},</p><p>see you on <b>{{ when }}</b> at {{ place }}.</p>",
    )
    t(
        conn,
        "appointment",
        "email",
        "Bonjour {{ name }},\nà {{ when }}, {{ place }}.",
        subject="Rappel : {{ when }}",
        html_body="<p>Bonjour {{ name }},</p><p>à <b>{{ when }}</b>, {{ place }}.</p>",
        locale="fr",
    )
    t(conn, "appointment", "sms", "Reminder: {{ when }} at {{ place }}.")
    t(
        conn,
        "spring_sale",
        "email",
        "{{ name }}, spring sale: {{ discount }}% off.",
        subject="{{ discount }}% off this week",
        html_body="<h1>{{ discount }}% off</h1>",
    )
    t(conn, "spring_sale", "push", "{{ discount }}% off this week only", title="Spring sale")

    ids = []
    for i in range(opts.recipients):
        locale, tz = LOCALES[i % len(LOCALES)]
        rid = f"user-{i:04d}"
        phone = INVALID_NUMBER if i == 7 else f"+1415555{i:04d}"
        outbox.upsert_recipient(
            conn, rid, email=f"{rid}@example.com", phone=phone, locale=locale, timezone=tz
        )
        if i % 2 == 0:
            token = DEAD_TOKEN if i == 4 else f"{i:08x}" * 8
            outbox.register_device(conn, rid, token, "apns")
        if i % 3 == 0:
            outbox.register_device(conn, rid, f"fcm-{i:06d}-{rng.getrandbits(64):016x}", "fcm")
        if i % 11 == 5:
            outbox.set_preference(conn, rid, "email", opted_in=False, category="marketing")
        ids.append(rid)
    conn.commit()
    return ids


def faults() -> dict[str, Any]:
    """The sandbox's faults for the demo: enough trouble to show every outcome."""
    return {
        "seed": 7,
        "hang_s": 10,
        "providers": {
            "twilio": {"error_rate": 0.15, "timeout_rate": 0.02, "dead": [INVALID_NUMBER]},
            "apns": {"error_rate": 0.1, "dead": [DEAD_TOKEN]},
            "fcm": {"error_rate": 0.1},
            "sendgrid": {"latency_ms": 120, "error_rate": 0.05},
            "mailchimp": {"error_rate": 0.05},
        },
    }


@dataclass
class ReceiptsService:
    """The receiver of the sandbox's receipts, as the demo watches it."""

    url: str
    sandbox: Sandbox
    receiver: Receiver

    def settled(self) -> bool:
        """No receipt on its way, and none held back by the receiver as early."""
        return self.sandbox.client.receipts_pending() == 0 and len(self.receiver.late) == 0

    def failed(self) -> int:
        """Receipts the sandbox gave up posting (or the receiver refused)."""
        return sum(1 for r in self.sandbox.client.receipts() if r["status"] != 200)


@contextmanager
def receipts_service(sandbox: Sandbox, url: str) -> Iterator[ReceiptsService]:
    """The `outbox webhooks` app on a free port, fed by the sandbox's signed receipts.

    Stops the sandbox on the way out, before the receiver: a receipt the sandbox
    still had in flight would otherwise find no one listening (ConnectError).
    """
    server = WebhookServer()
    settings = Settings(**sandbox.settings_values(), webhooks_public_url=server.url)
    app = create_app(WebhookConfig.from_settings(settings), url, pool_size=2)
    with WebhookThread(server, app):
        try:
            sandbox.client.set_webhooks(sendgrid=f"{server.url}/webhooks/sendgrid")
            yield ReceiptsService(server.url, sandbox, app.state.receiver)
        finally:
            sandbox.stop()


def worker_env(sandbox: Sandbox, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(sandbox.env())
    env.update(
        {
            "OUTBOX_DATABASE_URL": url,
            "OUTBOX_PROVIDERS_EMAIL": '["sendgrid", "mailchimp"]',
            "OUTBOX_PROVIDERS_SMS": '["twilio", "vonage"]',
            "OUTBOX_PROVIDERS_PUSH": '["apns", "fcm"]',
            # Short backoff and timeouts, so that retries happen within the demo's minute.
            "OUTBOX_BACKOFF_BASE_SECONDS": "0.5",
            "OUTBOX_BACKOFF_CAP_SECONDS": "4",
            "OUTBOX_PROVIDER_TIMEOUT_SECONDS": "2",
            "OUTBOX_LEASE_SECONDS": "10",
            "OUTBOX_POLL_INTERVAL_SECONDS": "0.5",
            "OUTBOX_LOG_FORMAT": "json",
            "OUTBOX_LOG_LEVEL": "INFO",
        }
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(
    n: int, env: dict[str, str], log_dir: Path
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """``n`` worker processes, each serving Prometheus metrics on a port of its own."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, metrics_urls = [], []
    for i in range(n):
        port = _free_port()
        log = open(log_dir / f"worker-{i + 1}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "outbox", "worker"],
                env={**env, "OUTBOX_METRICS_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
    return procs, metrics_urls


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def enqueue_mix(
    conn: psycopg.Connection[DictRow], recipients: list[str], opts: DemoOptions, rng: random.Random
) -> int:
    """Login codes, appointment reminders, a marketing blast. Returns notifications enqueued."""
    now = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    for i in range(opts.marketing):
        rid = recipients[i % len(recipients)]
        items.append(
            {
                "message_id": f"sale-{i}",
                "recipient": rid,
                "template": "spring_sale",
                "category": "marketing",
                "priority": -10,
                "data": {"name": rid, "discount": rng.choice([10, 15, 20, 30])},
            }
        )
    for i in range(opts.reminders):
        rid = recipients[rng.randrange(len(recipients))]
        items.append(
            {
                "message_id": f"appt-{i}",
                "recipient": rid,
                "template": "appointment",
                "category": "appointments",
                "priority": 0,
                "send_at": now + timedelta(seconds=rng.uniform(3, 15)),
                "data": {"name": rid, "when": "Thursday 10:30", "place": "12 Rue Oberkampf"},
            }
        )
    for i in range(opts.otps):
        # The first login code goes to the recipient whose number is invalid.
        rid = recipients[7] if i == 0 else recipients[rng.randrange(len(recipients))]
        items.append(
            {
                "message_id": f"otp-{i}",
                "recipient": rid,
                "template": "login_code",
                "category": "security",
                "priority": 100,
                "expires_at": now + timedelta(seconds=rng.choice([3, 60])),
                "data": {"code": f"{rng.randrange(10**6):06d}"},
            }
        )
    # The marketing blast goes in first: the login codes behind it still go out first.
    for start in range(0, len(items), 500):
        outbox.enqueue_many(conn, items[start : start + 500])
        conn.commit()
    return len(items)


def progress_table(rows: list[dict[str, Any]]) -> Table:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        counts[r["channel"]][r["status"]] = r["n"]
    table = Table(title="deliveries by channel and status", expand=False)
    columns = ("pending", "processing", "sent", "delivered", "dead", "expired", "suppressed")
    table.add_column("channel")
    for c in columns:
        table.add_column(c, justify="right")
    for channel in CHANNELS:
        table.add_row(channel, *(str(counts[channel].get(c, 0)) for c in columns))
    return table


def watch(
    conn: psycopg.Connection[DictRow],
    run: DemoRun,
    opts: DemoOptions,
    console: Console,
    receipts: ReceiptsService,
) -> bool:
    """Show progress until every delivery is finished or time is up; True if all finished.

    'sent' is finished, but its receipt may still be on its way: once everything
    is finished, the receipts get up to RECEIPTS_GRACE_S more to settle, so that
    the summary shows them applied.
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("finished deliveries", total=1)
    deadline = time.monotonic() + opts.duration
    settle_by: float | None = None
    with output.live(console, refresh_per_second=4, transient=False) as live:
        while True:
            rows = conn.execute(query("demo_progress")).fetchall()
            conn.commit()
            total = sum(r["n"] for r in rows)
            done = sum(r["n"] for r in rows if r["status"] in FINISHED)
            progress.update(task, total=total, completed=done)
            live.update(Group(progress, progress_table(rows)))
            if total and done == total:
                settle_by = settle_by or time.monotonic() + RECEIPTS_GRACE_S
                if receipts.settled() or time.monotonic() > settle_by:
                    return True
                time.sleep(0.25)
                continue
            if time.monotonic() > deadline:
                return False
            if any(p.poll() is not None for p in run.workers):
                console.print("[red]a worker exited early; see its log in", opts.state_dir / "logs")
                return False
            time.sleep(0.25)


def summary(
    conn: psycopg.Connection[DictRow],
    console: Console,
    run: DemoRun,
    opts: DemoOptions,
    finished: bool,
) -> None:
    outcomes = conn.execute(query("demo_outcomes")).fetchall()
    table = Table(title="how it ended, per channel and provider")
    for col in (
        "channel",
        "provider",
        "sent",
        "delivered",
        "retried",
        "dead",
        "expired",
        "suppressed",
        "unfinished",
    ):
        table.add_column(col, justify="left" if col in ("channel", "provider") else "right")
    for r in outcomes:
        table.add_row(
            r["channel"],
            r["provider"],
            *(
                str(r[c])
                for c in (
                    "sent",
                    "delivered",
                    "retried",
                    "dead",
                    "expired",
                    "suppressed",
                    "unfinished",
                )
            ),
        )
    console.print(table)

    latency = Table(title="latency, due -> accepted by the provider")
    for col in ("channel", "sent", "p50", "p99"):
        latency.add_column(col, justify="left" if col == "channel" else "right")
    for r in conn.execute(query("demo_latency")).fetchall():
        latency.add_row(r["channel"], str(r["n"]), f"{r['p50_ms']:.0f} ms", f"{r['p99_ms']:.0f} ms")
    console.print(latency)

    dead = conn.execute(query("demo_dead_reasons")).fetchall()
    if dead:
        reasons = Table(title="dead letters, by reason")
        for col in ("channel", "count", "reason"):
            reasons.add_column(col)
        for r in dead:
            reasons.add_row(r["channel"], str(r["n"]), r["reason"])
        console.print(reasons)
    for r in conn.execute(query("demo_deactivated_devices")).fetchall():
        console.print(
            f"[bold]device deactivated[/]: {r['platform']} token {r['token'][:12]}… of "
            f"{r['recipient']} — {r['reason']}"
        )
    for r in conn.execute(query("demo_suppressed_addresses")).fetchall():
        console.print(f"[bold]suppressed[/]: {r['channel']} {r['destination']} — {r['reason']}")

    elapsed = time.monotonic() - run.started
    state = "everything finished" if finished else "stopped before everything finished"
    failed = (
        f"\n{run.receipts_failed} delivery receipts could not be posted: see "
        f"{opts.state_dir / 'demo.log'}"
        if run.receipts_failed
        else ""
    )
    console.print(
        Panel.fit(
            f"{run.enqueued} notifications, {state} in {elapsed:.1f} s with {opts.workers} workers."
            f"{failed}\n"
            f"worker logs: {opts.state_dir / 'logs'}",
            title="outbox demo",
        )
    )
    # Commands to copy: printed outside the panel and never wrapped, so they paste whole.
    for line in where_next(run.url):
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def where_next(url: str) -> list[str]:
    """What to run next, against the demo's database (the CLI's default is another one)."""
    params = conninfo_to_dict(url)
    # Never print a password; libpq still finds it in PGPASSWORD or ~/.pgpass.
    password = params.pop("password", None)
    shown = shlex.quote(make_conninfo("", **params))
    outbox_cmd = _outbox_command()
    return [
        "Where to look next (in the demo's database"
        + (", password not shown" if password else "")
        + "):",
        f"  psql {shown}",
        "    SELECT * FROM outbox.queue_depth;   SELECT * FROM outbox.dead_letters;",
        "    SELECT * FROM outbox.message_timeline WHERE message_id = 'otp-0';",
        f"  OUTBOX_DATABASE_URL={shown} {outbox_cmd} inspect otp-0",
        "    (and so on: status, dlq list)",
    ]


def _outbox_command() -> str:
    """``outbox`` as this process was started, so that a printed command runs as printed."""
    prog = sys.argv[0]
    if Path(prog).name != "outbox":  # python -m outbox
        return f"{shlex.quote(sys.executable)} -m outbox"
    on_path = shutil.which("outbox")
    if on_path and Path(on_path).resolve() == Path(prog).resolve():
        return "outbox"
    return shlex.quote(prog)


def run_demo(server_url: str, opts: DemoOptions, console: Console | None = None) -> bool:
    """Run the demo against the server of ``server_url``; True if every delivery finished."""
    console = console or output.console()
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    # The in-process services (sandbox, receipts) log to a file, not over the progress display:
    # the receiver through structlog, the sandbox and the servers through logging.
    log_file = (opts.state_dir / "demo.log").open("w")  # noqa: SIM115 - open until the process ends
    configure(level="INFO", fmt="json", stream=log_file)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger("outbox").addHandler(handler)
    logging.getLogger("outbox").setLevel(logging.INFO)
    rng = random.Random(42)
    console.rule("[bold]outbox demo")
    console.print("database: creating", opts.database, "and migrating …")
    url = demo_database_url(server_url, opts.database)
    migrate.upgrade(url)
    run = DemoRun(url=url)
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        recipients = load_examples(conn, opts, rng)
        console.print(
            f"loaded {len(recipients)} recipients, their devices, and 3 templates in 2 locales"
        )
        # receipts_service stops the sandbox before the receiver (Ctrl-C included).
        with (
            Sandbox(opts.state_dir / "sandbox", faults=faults()) as sandbox,
            receipts_service(sandbox, url) as receipts,
        ):
            receipts_url = receipts.url
            console.print(
                f"provider sandbox on {sandbox.http_url} (APNs on {sandbox.apns_url}) with faults: "
                "15% Twilio errors, 10% APNs/FCM errors, a dead token, an invalid number, "
                "slow SendGrid"
            )
            console.print(
                f"delivery receipts: SendGrid events and Twilio status callbacks to {receipts_url}"
            )
            env = worker_env(sandbox, url)
            env["OUTBOX_TWILIO_STATUS_CALLBACK_URL"] = f"{receipts_url}/webhooks/twilio"
            run.workers, run.metrics_urls = start_workers(
                opts.workers, env, opts.state_dir / "logs"
            )
            console.print(
                f"{opts.workers} workers; their metrics, while they run: "
                + ", ".join(run.metrics_urls)
            )
            try:
                run.enqueued = enqueue_mix(conn, recipients, opts, rng)
                console.print(
                    f"enqueued {run.enqueued} notifications: "
                    f"{opts.marketing} marketing (priority -10), "
                    f"{opts.reminders} reminders (scheduled 3–15 s ahead), {opts.otps} login codes "
                    "(priority 100, some expiring in 3 s)"
                )
                finished = watch(conn, run, opts, console, receipts)
                run.receipts_failed = receipts.failed()
            finally:
                stop_workers(run.workers)
        summary(conn, console, run, opts, finished)
    return finished
