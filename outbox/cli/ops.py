"""``outbox status``, ``outbox inspect MESSAGE_ID``, ``outbox prune``: the on-call commands.

Formatting only; the work is in :mod:`outbox.ops`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text

from outbox import ops
from outbox.cli import output
from outbox.cli.common import parse_duration
from outbox.cli.output import Json
from outbox.errors import NotFound
from outbox.settings import Settings

EXIT_LOCKED = 2  # another prune (a worker's?) holds the retention lock


def _age(seconds: float | None) -> str:
    """3725.4 -> '1h 2m 5s'; a person reads this faster than seconds."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts[:3])


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _connect() -> psycopg.Connection[Any]:
    from outbox.db import resolve_url

    # outbox.ops reads through dict_row cursors of its own.
    return psycopg.connect(resolve_url(Settings()))


def status(as_json: Json = False) -> None:
    """Queue depth by channel and status, oldest due delivery, dead letters, provider breakers.

    \b
    Examples:
      outbox status
      outbox status --json | jq '.dead'
    """
    with _connect() as conn:
        report = ops.status(conn)
    if as_json:
        output.print_json(report)
        return
    out = output.console()

    queue = output.table(out, "queue: unfinished deliveries")
    for column in ("channel", "status", "due now", "scheduled", "total"):
        queue.add_column(
            column, justify="left" if column in ("channel", "status") else "right", no_wrap=True
        )
    for r in report["queue"]:
        queue.add_row(
            r["channel"], r["status"], str(r["due"]), str(r["scheduled"]), str(r["total"])
        )
    if not report["queue"]:
        queue.add_row("(all)", "-", "0", "0", "0")
    out.print(queue)

    oldest = output.table(out, "oldest due pending delivery")
    for column in ("channel", "waiting", "due since", "due now"):
        oldest.add_column(column, no_wrap=True)
    for r in report["oldest"]:
        oldest.add_row(
            r["channel"], _age(r["age_seconds"]), _when(r["oldest_due_at"]), str(r["due"])
        )
    if not report["oldest"]:
        oldest.add_row("(all)", "nothing waiting", "", "0")
    out.print(oldest)

    dead = output.table(out, "dead letters (outbox dlq list)")
    for column in ("channel", "dead", "newest"):
        dead.add_column(column, no_wrap=True)
    for r in report["dead"]:
        dead.add_row(r["channel"], str(r["dead"]), _when(r["newest"]))
    if not report["dead"]:
        dead.add_row("(all)", "0", "")
    out.print(dead)

    if report["breakers"] is not None:
        _print_breakers(out, report["breakers"])


def _cell(value: Any) -> str:
    text = _when(value) if isinstance(value, datetime) else "" if value is None else str(value)
    return escape(text)


def _print_breakers(out: Console, rows: list[dict[str, Any]]) -> None:
    """One row per provider if that fits the terminal, else one block per provider."""
    title = "provider circuit breakers"
    # Columns empty in every row (no breaker open, no probe running) are left out: noise.
    names = list(rows[0]) if rows else ["provider"]
    columns = [c for c in names if any(r[c] is not None for r in rows)]
    breakers = output.table(out, title)
    for column in columns or ["provider"]:
        # Names, states, counts and times stay whole; free text (the reason) folds.
        breakers.add_column(column, no_wrap=column != "reason", overflow="fold")
    for r in rows:
        breakers.add_row(*(_cell(r[c]) for c in columns))
    if not rows:
        breakers.add_row("(no breaker has tripped or recorded a failure yet)")
    if output.fits(out, breakers):
        out.print(breakers)
        return
    out.print(Text(title, style="bold"))
    for r in rows:
        shown = [(escape(c), _cell(r[c])) for c in columns if c != "provider" and r[c] is not None]
        output.print_fields(out, f"breaker {r.get('provider', '')}", shown)


def inspect(
    message_id: Annotated[
        str, typer.Argument(metavar="MESSAGE_ID", help="The message id given to enqueue.")
    ],
    show_data: Annotated[
        bool,
        typer.Option(
            "--data",
            metavar="",
            help="Show the template data's values (they may hold codes or personal data).",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """A notification, its deliveries and every event of its history, in order.

    \b
    Examples:
      outbox inspect order-42-confirmed
      outbox inspect order-42-confirmed --json | jq '.deliveries[].last_error'
    """
    try:
        with _connect() as conn:
            found = ops.inspect(conn, message_id)
    except NotFound as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    n = found["notification"]
    if not show_data:
        n["data"] = {key: "…" for key in n["data"]}
    if as_json:
        output.print_json(found)
        return
    out = output.console()

    head = []
    for key in (
        "id",
        "recipient",
        "address",
        "template_key",
        "category",
        "priority",
        "channels",
        "data",
        "send_at",
        "expires_at",
        "created_at",
    ):
        value = n[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        if value is not None:
            head.append((key, _cell(value)))
    output.print_fields(out, f"notification {n['message_id']}", head)

    # One block per delivery, not one row: a delivery has eleven things to show,
    # and as columns of one table the ones that matter when debugging (provider
    # message id, last error) were squeezed to nothing on any real terminal.
    # In a block each value gets the whole width and folds; nothing is cut.
    for d in found["deliveries"]:
        attempts = f"{d['attempts']}/{d['max_attempts']}" + (
            f" ({d['in_doubt']} in doubt)" if d["in_doubt"] else ""
        )
        rows: list[tuple[str, Any]] = [
            ("channel", d["channel"]),
            ("destination", d["destination"]),
            ("status", d["status"]),
            ("attempts", attempts),
            ("provider", d["provider"]),
            # The provider's own id of the message: what its receipts and support name.
            ("provider id", d["provider_message_id"]),
            ("next attempt", d["next_attempt_at"] if d["status"] == "pending" else None),
            ("sent", d["sent_at"]),
            ("delivered", d["delivered_at"]),
            ("finished", d["finished_at"]),
            ("last error", d["last_error"]),
        ]
        # The provider, its id and the error are always listed ("-" when unset),
        # so that their absence shows; unset times are left out.
        always = ("provider", "provider id", "last error")
        output.print_fields(
            out,
            f"delivery {d['id']} ({d['channel']}, {d['status']}; times in UTC)",
            [(k, "-" if v is None else _cell(v)) for k, v in rows if v is not None or k in always],
        )

    _print_timeline(out, found["timeline"])


def _print_timeline(out: Console, events: list[dict[str, Any]]) -> None:
    """The events as a table if it fits the terminal, else one line per event and its detail."""
    title = "timeline (UTC, month-day)"
    rows = [
        (
            e["at"].astimezone(UTC).strftime("%m-%d %H:%M:%S.%f")[:-3],
            str(e["delivery_id"] or ""),
            e["kind"],
            "" if e["attempt"] is None else str(e["attempt"]),
            escape(e["worker"] or ""),
            escape(json.dumps(e["detail"], ensure_ascii=False) if e["detail"] else ""),
        )
        for e in events
    ]
    timeline = output.table(out, title)
    for column in ("at", "delivery", "event", "attempt"):
        timeline.add_column(column, no_wrap=True)
    timeline.add_column("by", overflow="fold")
    timeline.add_column("detail", overflow="fold", ratio=1)
    for row in rows:
        timeline.add_row(*row)
    if output.fits(out, timeline):
        out.print(timeline)
        return
    # Too narrow for six columns: the detail (an outcome's JSON) would fold into
    # a column a dozen characters wide. Its own line gets the whole width.
    out.print(Text(title, style="bold"))
    for at, delivery, kind, attempt, worker, detail in rows:
        line = "  ".join(
            part
            for part in (
                at,
                f"delivery {delivery}" if delivery else "",
                f"[bold]{kind}[/bold]",
                f"attempt {attempt}" if attempt else "",
                f"by {worker}" if worker else "",
            )
            if part
        )
        out.print(line, overflow="fold")
        if detail:
            out.print(Padding(Text.from_markup(detail, overflow="fold"), (0, 0, 0, 4)))


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Remove finished history older than this, e.g. 30d.",
        ),
    ],
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, metavar="N", help="Rows looked at per transaction.")
    ] = 1000,
    pause: Annotated[
        float, typer.Option(min=0, metavar="SECONDS", help="Seconds to sleep between batches.")
    ] = 0.0,
) -> None:
    """Delete finished deliveries, their events and emptied notifications older than the cutoff.

    Unfinished deliveries (pending, processing) and recent history are kept.
    Works in small batches, each its own short transaction that skips locked
    rows, so workers keep claiming meanwhile. Exits 2 if another prune (a
    worker's periodic one) is running.

    \b
    Examples:
      outbox prune --older-than 30d
      outbox prune --older-than 7d --batch-size 500 --pause 0.1
    """
    age: timedelta = parse_duration(older_than)

    async def run() -> ops.PruneResult | None:
        from outbox.db import resolve_url

        async with await psycopg.AsyncConnection.connect(
            resolve_url(Settings()), autocommit=True, application_name="outbox prune"
        ) as conn:
            return await ops.prune_exclusive(
                conn, older_than=age, batch_size=batch_size, pause_seconds=pause
            )

    result = asyncio.run(run())
    if result is None:
        typer.echo("another prune is running (it holds the retention lock); nothing done", err=True)
        raise typer.Exit(EXIT_LOCKED)
    typer.echo(
        f"pruned {result.deliveries} deliveries, {result.notifications} notifications and "
        f"{result.events} events finished before {_when(result.cutoff)} "
        f"({result.batches} batches, {result.seconds:.1f}s)"
    )
