"""``outbox sandbox``: run the local provider sandbox in the foreground.

It prints where it listens and writes ``outbox.env`` into its state
directory: the ``OUTBOX_*`` settings that point every provider adapter at
it (``set -a; . .outbox/sandbox/outbox.env; set +a``, or copy them to .env).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from outbox.settings import Settings

DEFAULT_PORT = 4010
DEFAULT_TLS_PORT = 4443


def _faults(value: str | None) -> dict[str, Any] | None:
    """``--faults``: JSON text, or ``@path`` to a JSON file."""
    if not value:
        return None
    try:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        doc = json.loads(text)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {value[1:]}: {exc.strerror}") from None
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise typer.BadParameter("must be a JSON object")
    return doc


def sandbox(
    host: Annotated[
        str, typer.Option(help="Loopback address to listen on (nothing else is allowed).")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            help="Plain HTTP port: FCM, Twilio, Vonage, SendGrid, Mandrill and the "
            "/_sandbox control API (0 = any free port)."
        ),
    ] = DEFAULT_PORT,
    tls_port: Annotated[
        int, typer.Option("--tls-port", help="TLS + HTTP/2 port for APNs (0 = any free port).")
    ] = DEFAULT_TLS_PORT,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Keys, local CA, credentials, sandbox.json and outbox.env "
            "(default: OUTBOX_DATA_DIR/sandbox).",
        ),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            help="Fault configuration: JSON text, or @file.json (see outbox.sandbox.faults)."
        ),
    ] = None,
    sendgrid_webhook_url: Annotated[
        str | None,
        typer.Option("--sendgrid-webhook-url", help="Where to POST signed SendGrid events."),
    ] = None,
) -> None:
    """Run the provider sandbox until Ctrl-C or SIGTERM."""
    from outbox.sandbox import SandboxError, SandboxServer
    from outbox.sandbox.server import ENV_FILE

    try:
        server = SandboxServer(
            state_dir or Settings().data_dir / "sandbox",
            host=host,
            port=port,
            tls_port=tls_port,
            faults=_faults(faults),
            sendgrid_event_webhook_url=sendgrid_webhook_url,
        )
    except SandboxError as exc:
        typer.echo(f"outbox sandbox: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"provider sandbox: http {server.http_url}  apns {server.apns_url}")
    typer.echo(f"  trust CA:  {server.credentials.ca_file}")
    typer.echo(f"  settings:  {server.state_dir / ENV_FILE}")
    typer.echo(f"  requests:  {server.http_url}/_sandbox/requests")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop)

    asyncio.run(run())
    typer.echo("provider sandbox stopped")
