"""The ``outbox`` command: one Typer app, one module per group of subcommands.

Configuration is read here, once, and passed down as explicit arguments.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="outbox",
    help="Transactional notifications for applications on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported here so that `import outbox` stays light for applications.
    from outbox.cli import db, demo, dlq, migrate, ops, sandbox, webhooks, worker
    from outbox.cli import templates

    app.add_typer(db.app, name="db")
    app.add_typer(dlq.app, name="dlq")
    app.add_typer(templates.app, name="templates")
    app.command("demo")(demo.demo)
    app.command("migrate")(migrate.migrate)
    app.command("worker")(worker.worker)
    app.command("sandbox")(sandbox.sandbox)
    app.command("webhooks")(webhooks.webhooks)
    app.command("status")(ops.status)
    app.command("inspect")(ops.inspect)
    app.command("prune")(ops.prune)


def main() -> None:
    _register()
    app()
