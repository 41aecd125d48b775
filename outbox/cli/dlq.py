"""``outbox dlq``: the dead-letter queue (dead deliveries) — list, requeue, purge."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from outbox import dlq
from outbox.cli.common import actor, ago, connection, parse_duration
from outbox.errors import ValidationError

app = typer.Typer(help="The dead-letter queue: deliveries that ended dead, with their reason.",
                  no_args_is_help=True)

Ids = Annotated[list[int] | None, typer.Option("--id", help="Delivery id (repeat).")]
MessageIds = Annotated[list[str] | None, typer.Option("--message-id", help="Message id (repeat).")]
Channel = Annotated[str | None, typer.Option(help="email, sms or push.")]
Reason = Annotated[str | None, typer.Option(help="Text the reason contains (case-insensitive).")]
Since = Annotated[str | None, typer.Option(help="Died within this long, e.g. 24h.")]
Before = Annotated[str | None, typer.Option("--older-than", help="Died longer ago than this, e.g. 7d.")]


@app.command("list")
def list_(ids: Ids = None, message_ids: MessageIds = None, channel: Channel = None, reason: Reason = None,
          since: Since = None, older_than: Before = None,
          limit: Annotated[int, typer.Option(help="Most rows shown.")] = 50) -> None:
    """Dead deliveries, newest first, with why they died."""
    try:
        with connection() as conn:
            rows = dlq.list_dead(conn, delivery_ids=ids, message_ids=message_ids, channel=channel,
                                 reason=reason, since=ago(since), before=ago(older_than), limit=limit)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    table = Table(title=f"dead letters ({len(rows)} shown)")
    for column in ("delivery", "message id", "channel", "destination", "provider", "attempts",
                   "died", "reason"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r["delivery_id"]), r["message_id"], r["channel"], r["destination"],
                      r["provider"] or "", str(r["attempts"]),
                      r["died_at"].strftime("%Y-%m-%d %H:%M:%S") if r["died_at"] else "", r["reason"] or "")
    Console(width=160).print(table)


@app.command()
def requeue(ids: Ids = None, message_ids: MessageIds = None, channel: Channel = None,
            reason: Reason = None, since: Since = None, older_than: Before = None,
            all_: Annotated[bool, typer.Option("--all", help="Requeue every dead delivery.")] = False) -> None:
    """Send matching dead deliveries again (attempts reset; the event records who did it)."""
    try:
        with connection() as conn:
            n = dlq.requeue(conn, actor=actor(), delivery_ids=ids, message_ids=message_ids,
                            channel=channel, reason=reason, since=ago(since), before=ago(older_than),
                            everything=all_)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"requeued {n} dead deliver{'y' if n == 1 else 'ies'}")


@app.command()
def purge(older_than: Annotated[str, typer.Option("--older-than", help="Delete what died longer ago than this, e.g. 30d.")]) -> None:
    """Delete dead deliveries (and their events) that died before the cutoff."""
    from datetime import UTC, datetime

    cutoff = datetime.now(UTC) - parse_duration(older_than)
    with connection() as conn:
        n = dlq.purge(conn, before=cutoff)
    typer.echo(f"purged {n} dead deliver{'y' if n == 1 else 'ies'} older than {older_than}")
