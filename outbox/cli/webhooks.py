"""``outbox webhooks``: receive delivery receipts from the providers (docs/webhooks.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from outbox.settings import Settings


def webhooks(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default OUTBOX_WEBHOOKS_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (default OUTBOX_WEBHOOKS_PORT, 4020; 0 = any free)."),
    ] = None,
) -> None:
    """Receive Twilio, SendGrid, Vonage and Mailchimp receipts until SIGTERM/SIGINT.

    POST /webhooks/{twilio,sendgrid,vonage,mailchimp}, GET /healthz, GET /metrics.
    A provider whose secret is not configured has its requests refused (404).
    """
    import psycopg
    import structlog

    from outbox.db import webhooks_url
    from outbox.logs import configure
    from outbox.migrate import check
    from outbox.webhooks import WebhookConfig, WebhookConfigError, WebhookServer, create_app
    from outbox.webhooks.app import PROVIDER_MODULES
    from outbox.webhooks.store import check_role

    settings = Settings()
    configure(level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values())
    try:
        config = WebhookConfig.from_settings(settings)
    except WebhookConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    url = webhooks_url(settings)
    # Before binding the port: receipts for a schema that is missing or of another
    # release, or a role that may not apply them, would each fail on their own,
    # after the providers were told 200.
    check(url)
    with psycopg.connect(url) as conn:
        role = check_role(conn)
    if role.missing:
        typer.echo(
            f"outbox webhooks: database role {role.role!r} may not apply receipts "
            f"(it lacks {', '.join(role.missing)}). Connect as a member of outbox_webhooks: "
            "set OUTBOX_WEBHOOKS_DATABASE_URL (docs/webhooks.md).",
            err=True,
        )
        raise typer.Exit(2)
    if role.excess:
        # It works, but an internet-facing service should not hold these.
        structlog.get_logger("outbox.webhooks").warning(
            "webhooks.role_too_broad",
            role=role.role,
            beyond_receipts=role.excess,
            hint="connect as a member of outbox_webhooks (OUTBOX_WEBHOOKS_DATABASE_URL)",
        )
    missing = {m.PATH: config.missing(m.NAME) for m in PROVIDER_MODULES}
    if all(missing.values()):
        typer.echo(
            "outbox webhooks: no provider can verify its webhooks; set at least one of:", err=True
        )
        for path, what in missing.items():
            typer.echo(f"  {path}: {what}", err=True)
        raise typer.Exit(2)
    try:
        server = WebhookServer(
            host or settings.webhooks_host, settings.webhooks_port if port is None else port
        )
    except OSError as exc:
        typer.echo(f"outbox webhooks: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    app = create_app(config, url, pool_size=settings.webhooks_db_pool_size)
    typer.echo(f"webhooks: listening on {server.url}  (public URL: {config.public_url or 'unset'})")
    for path, what in missing.items():
        typer.echo(f"  POST {path:<19} {'ready' if what is None else 'off: set ' + what}")
    server.run(app)
    typer.echo("webhooks stopped")
