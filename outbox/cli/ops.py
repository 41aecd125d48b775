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
from rich.table import Table

from outbox import ops
from outbox.cli.common import parse_duration
from outbox.errors import NotFound
from outbox.settings import Settings

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables (for scripts).")]
EXIT_LOCKED = 2  # another prune (a worker's?) holds the retention lock


def _console() -> Console:
    # Wide enough that ids, timestamps and reasons are not wrapped into unreadable columns.
    return Console(width=160, highlight=False)


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


def _short(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%S") if value else ""


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _connect() -> psycopg.Connection[Any]:
    from outbox.db import resolve_url

    # outbox.ops reads through dict_row cursors of its own.
    return psycopg.connect(resolve_url(Settings()))


def status(as_json: Json = False) -> None:
    """Queue depth by channel and status, oldest due delivery, dead letters, provider breakers."""
    with _connect() as conn:
        report = ops.status(conn)
    if as_json:
        _dump(report)
        return
    out = _console()

    queue = Table(title="queue: unfinished deliveries", title_justify="left")
    for column in ("channel", "status", "due now", "scheduled", "total"):
        queue.add_column(column, justify="right" if column not in ("channel", "status") else "left")
    for r in report["queue"]:
        queue.add_row(
            r["channel"], r["status"], str(r["due"]), str(r["scheduled"]), str(r["total"])
        )
    if not report["queue"]:
        queue.add_row("(all)", "-", "0", "0", "0")
    out.print(queue)

    oldest = Table(title="oldest due pending delivery", title_justify="left")
    for column in ("channel", "waiting", "due since", "due now"):
        oldest.add_column(column)
    for r in report["oldest"]:
        oldest.add_row(
            r["channel"], _age(r["age_seconds"]), _when(r["oldest_due_at"]), str(r["due"])
        )
    if not report["oldest"]:
        oldest.add_row("(all)", "nothing waiting", "", "0")
    out.print(oldest)

    dead = Table(title="dead letters (outbox dlq list)", title_justify="left")
    for column in ("channel", "dead", "newest"):
        dead.add_column(column)
    for r in report["dead"]:
        dead.add_row(r["channel"], str(r["dead"]), _when(r["newest"]))
    if not report["dead"]:
        dead.add_row("(all)", "0", "")
    out.print(dead)

    if report["breakers"] is not None:
        breakers = Table(title="provider circuit breakers", title_justify="left")
        columns = list(report["breakers"][0]) if report["breakers"] else ["provider"]
        for column in columns:
            breakers.add_column(column)
        for r in report["breakers"]:
            breakers.add_row(
                *(
                    escape(_when(v) if isinstance(v, datetime) else str(v if v is not None else ""))
                    for v in r.values()
                )
            )
        out.print(breakers)


def inspect(
    message_id: Annotated[str, typer.Argument(help="The message id given to enqueue.")],
    show_data: Annotated[
        bool,
        typer.Option(
            "--data", help="Show the template data's values (they may hold codes or personal data)."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """A notification, its deliveries and every event of its history, in order."""
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
        _dump(found)
        return
    out = _console()

    head = Table(
        title=f"notification {escape(n['message_id'])}", title_justify="left", show_header=False
    )
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
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
        if isinstance(value, datetime):
            value = _when(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        head.add_row(key, escape("" if value is None else str(value)))
    out.print(head)

    deliveries = Table(title="deliveries (times in UTC, month-day)", title_justify="left")
    for column in (
        "id",
        "channel",
        "destination",
        "status",
        "attempts",
        "provider",
        "provider msg id",
        "next attempt",
        "sent",
        "finished",
        "last error",
    ):
        # Ids, addresses and times stay whole (they get copied); the error text folds.
        folds = column in ("last error", "provider msg id")
        deliveries.add_column(
            column, overflow="fold", no_wrap=not folds, ratio=3 if folds else None
        )
    for d in found["deliveries"]:
        attempts = f"{d['attempts']}/{d['max_attempts']}" + (
            f" ({d['in_doubt']} in doubt)" if d["in_doubt"] else ""
        )
        deliveries.add_row(
            str(d["id"]),
            d["channel"],
            escape(d["destination"]),
            d["status"],
            attempts,
            d["provider"] or "",
            escape(d["provider_message_id"] or ""),
            _short(d["next_attempt_at"]) if d["status"] == "pending" else "",
            _short(d["sent_at"]),
            _short(d["finished_at"]),
            escape(d["last_error"] or ""),
        )
    out.print(deliveries)

    timeline = Table(title="timeline", title_justify="left")
    for column in ("at", "delivery", "event", "attempt", "by", "detail"):
        timeline.add_column(column, overflow="fold")
    for e in found["timeline"]:
        timeline.add_row(
            e["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            str(e["delivery_id"] or ""),
            e["kind"],
            "" if e["attempt"] is None else str(e["attempt"]),
            escape(e["worker"] or ""),
            escape(json.dumps(e["detail"], ensure_ascii=False) if e["detail"] else ""),
        )
    out.print(timeline)


def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Remove finished history older than this, e.g. 30d.")
    ],
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows looked at per transaction.")
    ] = 1000,
    pause: Annotated[float, typer.Option(min=0, help="Seconds to sleep between batches.")] = 0.0,
) -> None:
    """Delete finished deliveries, their events and emptied notifications older than the cutoff.

    Unfinished deliveries (pending, processing) and recent history are kept.
    Works in small batches, each its own short transaction that skips locked
    rows, so workers keep claiming meanwhile. Exits 2 if another prune (a
    worker's periodic one) is running.
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
