"""``outbox demo``: the whole flow end to end, with live progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from outbox.settings import Settings


def demo(
    recipients: Annotated[int, typer.Option(min=10, help="Example recipients to create.")] = 150,
    marketing: Annotated[
        int, typer.Option(min=0, help="Notifications in the marketing blast.")
    ] = 600,
    otps: Annotated[
        int, typer.Option(min=0, help="Login codes (high priority, short expiry).")
    ] = 40,
    reminders: Annotated[
        int, typer.Option(min=0, help="Appointment reminders (scheduled a few seconds ahead).")
    ] = 60,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
    duration: Annotated[
        float, typer.Option(min=5, help="Stop after this many seconds at most.")
    ] = 90.0,
    database: Annotated[
        str, typer.Option(help="Database the demo (re)creates on the server.")
    ] = "outbox_demo",
) -> None:
    """Run the whole flow on this machine: database, sandbox providers with faults, two workers,
    a realistic mix of notifications, live progress, and a summary.

    Uses OUTBOX_DATABASE_URL's server, or the embedded PostgreSQL; creates (and recreates on
    each run) a database named outbox_demo (or --database) there. Ctrl-C stops it cleanly.
    """
    from outbox.db import resolve_url
    from outbox.demo import DemoOptions, run_demo

    settings = Settings()
    opts = DemoOptions(
        recipients=recipients,
        marketing=marketing,
        otps=otps,
        reminders=reminders,
        workers=workers,
        duration=duration,
        state_dir=Path(settings.data_dir) / "demo",
        database=database,
    )
    try:
        finished = run_demo(resolve_url(settings), opts)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: workers stopped, sandbox stopped.")
        raise typer.Exit(130) from None
    raise typer.Exit(0 if finished else 1)
