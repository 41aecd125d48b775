"""``outbox api`` (the HTTP API) and ``outbox api-keys`` (its keys). docs/api.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from outbox.cli import output
from outbox.cli.common import actor, connection, parse_duration
from outbox.cli.output import Json
from outbox.errors import NotFound, ValidationError
from outbox.settings import Settings


def api(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default OUTBOX_API_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (default OUTBOX_API_PORT, 4030; 0 = any free)."),
    ] = None,
) -> None:
    """Serve the HTTP API until SIGTERM/SIGINT (stateless: run as many as you like).

    Recipients, devices, preferences, enqueue (one or bulk), cancel, a
    notification's status and timeline; /openapi.json describes them. Every
    request needs a key from `outbox api-keys create`.
    """
    from outbox.apiserver import ApiServer, create_app
    from outbox.db import resolve_url
    from outbox.logs import configure
    from outbox.migrate import check

    settings = Settings()
    configure(level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values())
    url = resolve_url(settings)
    check(url)  # before binding the port: a schema of another release fails every request
    try:
        server = ApiServer(host or settings.api_host, settings.api_port if port is None else port)
    except OSError as exc:
        typer.echo(f"outbox api: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    app = create_app(
        url, pool_size=settings.api_db_pool_size, max_body_bytes=settings.api_max_body_bytes
    )
    typer.echo(f"api: listening on {server.url}  (OpenAPI: {server.url}/openapi.json)")
    server.run(app)
    typer.echo("api stopped")


keys_app = typer.Typer(
    help="API keys of `outbox api`: create (shown once), list, revoke. As the schema owner.",
    no_args_is_help=True,
)


@keys_app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. mobile-app.")],
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scope",
            "-s",
            metavar="SCOPE",
            help="admin, devices, enqueue, read or recipients (repeat).",
        ),
    ],
    rate_per_second: Annotated[
        float | None,
        typer.Option(metavar="N", help="This key's own rate limit, requests per second."),
    ] = None,
    burst: Annotated[
        float | None, typer.Option(metavar="N", help="With --rate-per-second: the burst.")
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="It stops working this long from now, e.g. 90d (default: when revoked).",
        ),
    ] = None,
) -> None:
    """Create a key and print it, once, on stdout: it is stored only as a hash.

    \b
    Examples:
      outbox api-keys create mobile-app --scope devices
      KEY=$(outbox api-keys create billing -s enqueue -s read)
      outbox api-keys create partner -s read --expires-in 30d
    """
    from outbox.apiserver import keys

    try:
        with connection() as conn:
            made = keys.create(
                conn,
                name,
                scopes,
                created_by=actor(),
                rate_per_second=rate_per_second,
                burst=burst,
                expires_in=None if expires_in is None else parse_duration(expires_in),
            )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    until = (
        ""
        if made.expires_at is None
        else f", expires {made.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    )
    typer.echo(
        f"API key {made.name!r} (id {made.id}, scopes: {', '.join(made.scopes)}{until}) "
        "created; it is shown only now:",
        err=True,
    )
    typer.echo(made.key)


@keys_app.command("list")
def list_(as_json: Json = False) -> None:
    """Every key, live ones first: name, the first characters, scopes, use. Never a key."""
    from outbox.apiserver import keys

    with connection() as conn:
        rows = keys.list_keys(conn)
    if as_json:
        output.print_json(rows)
        return
    out = output.console()
    title = f"API keys ({len(rows)}, times in UTC)"
    headers = (
        "id",
        "name",
        "key",
        "scopes",
        "rate/s",
        "burst",
        "created",
        "last used",
        "expires",
        "revoked",
    )

    def when(value: datetime | None) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""

    cells = [
        (
            str(r["id"]),
            escape(r["name"]),
            r["prefix"] + "…",
            ", ".join(r["scopes"]),
            "" if r["rate_per_second"] is None else f"{r['rate_per_second']:g}",
            "" if r["burst"] is None else f"{r['burst']:g}",
            when(r["created_at"]),
            when(r["last_used_at"]),
            when(r["expires_at"]),
            when(r["revoked_at"]),
        )
        for r in rows
    ]
    output.print_rows(out, title, headers, cells, label="key")


@keys_app.command()
def revoke(
    key: Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The key's name or id.")],
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    from outbox.apiserver import keys

    try:
        with connection() as conn:
            row = keys.revoke(conn, key)
    except NotFound as exc:
        typer.echo(f"outbox api-keys revoke: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked API key {row['name']!r} (id {row['id']}, {row['prefix']}…)")
