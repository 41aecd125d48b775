"""The ``outbox`` command: one Typer app, one module per group of subcommands.

Configuration is read here, once, and passed down as explicit arguments. A
failure the user can fix is explained by :mod:`outbox.cli.errors` (the app's
group class), not shown as a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

from outbox.cli.errors import OutboxGroup

app = typer.Typer(
    name="outbox",
    help="Transactional notifications for applications on PostgreSQL.",
    cls=OutboxGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from outbox.migrate import head

    try:
        package = version("outbox")
    except PackageNotFoundError:  # run from a checkout that was never installed
        package = "unknown (not installed)"
    typer.echo(f"outbox {package}\nschema revision needed: {head()} (`outbox migrate` installs it)")
    raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error (also: OUTBOX_DEBUG=1).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print Outbox's version and the schema revision it needs, and exit.",
        ),
    ] = False,
) -> None:
    """Transactional notifications for applications on PostgreSQL."""
    # --debug is read by OutboxGroup when a command fails; nothing to do here.


def schema_checked(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command``, refusing to run on a database whose schema is not at this Outbox's revision.

    For the commands that read the outbox schema: without it, an un-migrated or
    older database fails halfway, on whichever table is missing first. The
    check is one query (outbox.migrate.check). typer reads the signature through
    ``functools.wraps``, so options and help are the command's own; ``--help``
    is answered before the check runs.
    """

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        from outbox.db import resolve_url
        from outbox.migrate import check
        from outbox.settings import Settings

        check(resolve_url(Settings()))
        return command(*args, **kwargs)

    return checked


def _check_all(group: typer.Typer) -> None:
    # Every subcommand of `dlq`, `templates` and `api-keys` reads the schema.
    for info in group.registered_commands:
        if info.callback is not None:
            info.callback = schema_checked(info.callback)


def _register() -> None:
    # Imported here so that `import outbox` stays light for applications.
    from outbox.cli import (
        api,
        console,
        db,
        demo,
        dlq,
        migrate,
        ops,
        sandbox,
        send,
        templates,
        webhooks,
        worker,
    )

    if getattr(_register, "done", False):
        return
    _register.done = True  # type: ignore[attr-defined]
    _check_all(dlq.app)
    _check_all(templates.app)
    _check_all(api.keys_app)
    app.add_typer(db.app, name="db")
    app.add_typer(api.keys_app, name="api-keys")
    app.add_typer(dlq.app, name="dlq")
    app.add_typer(templates.app, name="templates")
    app.command("demo")(demo.demo)
    app.command("migrate")(migrate.migrate)
    app.command("worker")(worker.worker)
    app.command("sandbox")(sandbox.sandbox)
    app.command("webhooks")(webhooks.webhooks)
    app.command("console")(console.console)
    app.command("api")(api.api)
    app.command("status")(schema_checked(ops.status))
    app.command("inspect")(schema_checked(ops.inspect))
    app.command("prune")(schema_checked(ops.prune))
    app.command("send")(schema_checked(send.send))


def main() -> None:
    _register()
    app()
