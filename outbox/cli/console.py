"""``outbox console``: the operator console, a web page over the queue (docs/console.md)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from outbox.settings import Settings


def console(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default OUTBOX_CONSOLE_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (default OUTBOX_CONSOLE_PORT, 4040; 0 = any free)."),
    ] = None,
) -> None:
    """Serve the operator console until SIGTERM/SIGINT: queue, dead letters, search, providers.

    Operators log in with their name and the console token: OUTBOX_CONSOLE_TOKEN,
    or one made now and printed once below. Requeues and purges are recorded
    with the operator's name.
    """
    from outbox.console import ConsoleConfig, ConsoleServer, create_app, new_token
    from outbox.db import resolve_url
    from outbox.errors import ValidationError
    from outbox.logs import configure
    from outbox.migrate import check

    settings = Settings()
    configured = settings.console_token.get_secret_value() if settings.console_token else ""
    token, generated = (configured, False) if configured else (new_token(), True)
    # The token is a secret like the others: the log redaction knows it.
    configure(
        level=settings.log_level,
        fmt=settings.log_format,
        secrets=[*settings.secret_values(), token],
    )
    try:
        config = ConsoleConfig.from_settings(settings, token)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="OUTBOX_CONSOLE_TOKEN") from None
    url = resolve_url(settings)
    check(url)
    try:
        server = ConsoleServer(
            host or settings.console_host, settings.console_port if port is None else port
        )
    except OSError as exc:
        typer.echo(f"outbox console: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    app = create_app(config, url)
    typer.echo(f"console: listening on {server.url}")
    if generated:
        # Printed once, to the terminal only (never through the logger), like Jupyter's.
        typer.echo(f"  console token (made now; set OUTBOX_CONSOLE_TOKEN to keep one): {token}")
    else:
        typer.echo("  console token: OUTBOX_CONSOLE_TOKEN")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(app, stop)

    asyncio.run(run())
    typer.echo("console stopped")
