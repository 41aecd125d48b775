"""``outbox dlq``: the dead-letter queue (dead deliveries) — list, requeue, purge."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer
from rich.markup import escape

from outbox import dlq
from outbox.cli import output
from outbox.cli.common import actor, ago, connection, parse_duration
from outbox.cli.output import Json
from outbox.errors import ValidationError

app = typer.Typer(
    help="The dead-letter queue: deliveries that ended dead, with their reason.",
    no_args_is_help=True,
)

# metavar: one placeholder per kind of value (ID, DURATION...), instead of typer's <list[int]>.
Ids = Annotated[list[int] | None, typer.Option("--id", metavar="ID", help="Delivery id (repeat).")]
MessageIds = Annotated[
    list[str] | None,
    typer.Option("--message-id", metavar="MESSAGE_ID", help="Message id (repeat)."),
]
Channel = Annotated[str | None, typer.Option(metavar="CHANNEL", help="email, sms or push.")]
Provider = Annotated[
    str | None, typer.Option(metavar="PROVIDER", help="Provider name, e.g. twilio.")
]
Reason = Annotated[
    str | None, typer.Option(metavar="TEXT", help="Text the reason contains (case-insensitive).")
]
Since = Annotated[
    str | None, typer.Option(metavar="DURATION", help="Died within this long, e.g. 24h.")
]
Before = Annotated[
    str | None,
    typer.Option("--older-than", metavar="DURATION", help="Died longer ago than this, e.g. 7d."),
]


@app.command("list")
def list_(
    ids: Ids = None,
    message_ids: MessageIds = None,
    channel: Channel = None,
    provider: Provider = None,
    reason: Reason = None,
    since: Since = None,
    older_than: Before = None,
    limit: Annotated[int, typer.Option(metavar="N", help="Most rows shown.")] = 50,
    as_json: Json = False,
) -> None:
    """Dead deliveries, newest first, with why they died.

    \b
    Examples:
      outbox dlq list --since 2h --channel sms
      outbox dlq list --reason 503 --json | jq '.[].delivery_id'
    """
    try:
        with connection() as conn:
            rows = dlq.list_dead(
                conn,
                delivery_ids=ids,
                message_ids=message_ids,
                channel=channel,
                provider=provider,
                reason=reason,
                since=ago(since),
                before=ago(older_than),
                limit=limit,
            )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        output.print_json(rows)
        return
    out = output.console()
    title = f"dead letters ({len(rows)} shown, times in UTC)"
    cells = [
        (
            str(r["delivery_id"]),
            escape(r["message_id"]),
            r["channel"],
            escape(r["destination"]),
            escape(r["provider"] or ""),
            str(r["attempts"]),
            r["died_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r["died_at"] else "",
            escape(r["reason"] or ""),
        )
        for r in rows
    ]
    headers = (
        "delivery",
        "message id",
        "channel",
        "destination",
        "provider",
        "attempts",
        "died",
        "reason",
    )
    # Everything but the reason is copied into the next command (--id, --message-id): whole.
    output.print_rows(out, title, headers, cells, label="delivery", folding={"reason"})


@app.command()
def requeue(
    ids: Ids = None,
    message_ids: MessageIds = None,
    channel: Channel = None,
    provider: Provider = None,
    reason: Reason = None,
    since: Since = None,
    older_than: Before = None,
    all_: Annotated[bool, typer.Option("--all", help="Requeue every dead delivery.")] = False,
) -> None:
    """Send matching dead deliveries again (attempts reset; the event records who did it)."""
    try:
        with connection() as conn:
            n = dlq.requeue(
                conn,
                actor=actor(),
                delivery_ids=ids,
                message_ids=message_ids,
                channel=channel,
                provider=provider,
                reason=reason,
                since=ago(since),
                before=ago(older_than),
                everything=all_,
            )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc).replace("everything=True", "--all")) from None
    typer.echo(f"requeued {n} dead deliver{'y' if n == 1 else 'ies'}")


@app.command()
def purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete what died longer ago than this, e.g. 30d.")
    ],
) -> None:
    """Delete dead deliveries (and their events) that died before the cutoff.

    Each leaves one event on its notification naming who purged it (`cli:<user>`).
    """
    from datetime import UTC, datetime

    cutoff = datetime.now(UTC) - parse_duration(older_than)
    with connection() as conn:
        n = dlq.purge(conn, actor=actor(), before=cutoff)
    typer.echo(f"purged {n} dead deliver{'y' if n == 1 else 'ies'} older than {older_than}")
