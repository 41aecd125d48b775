"""``outbox send``: one notification, or a broadcast to a topic, a list or an SQL segment.

A one-off (``--to RECIPIENT`` or ``--address``) is one ``outbox.enqueue``. A
broadcast (``--topic``, ``--segment``, or ``--to`` given more than once) runs in
chunks of ``--chunk`` recipients, each chunk one statement and its own
transaction: a run that stops halfway (Ctrl-C, a lost connection) is finished by
running the same command with the same ``--message-id``, which skips the
recipients already covered (the broadcast is idempotent per message id and
recipient). On a terminal a progress bar follows the chunks; elsewhere one line
per chunk goes to stderr and the summary to stdout.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql as pgsql
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import outbox
from outbox.calls import BroadcastResult
from outbox.cli import output
from outbox.cli.common import connection
from outbox.cli.output import Json
from outbox.errors import ValidationError
from outbox.sql import query

#: Recipients per chunk of a broadcast: big enough that a statement's overhead is
#: small, small enough that a chunk commits in about a second on a small server.
DEFAULT_CHUNK = 5000


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"must be a JSON object like '{{\"order\": 42}}', got {text!r}")
    return value


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time like 2026-12-24T09:00Z"
        ) from None
    if value.utcoffset() is None:
        raise typer.BadParameter(
            f"{text!r} has no time zone; add one, e.g. {text}Z or {text}+01:00"
        )
    return value


def send(
    template: Annotated[str, typer.Option(metavar="TEMPLATE", help="Template key.")],
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="RECIPIENT",
            help="Recipient id (the app's user id). Repeat it to broadcast to a list.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help="A direct email address or E.164 number."),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(metavar="TOPIC", help="Broadcast to every subscriber of TOPIC.")
    ] = None,
    segment: Annotated[
        str | None,
        typer.Option(
            metavar="SQL",
            help="Broadcast to the recipient ids (text) this query returns, run as your role.",
        ),
    ] = None,
    message_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="Idempotency key (default: a new one, printed). Reuse it to finish a broadcast.",
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(metavar="JSON", help="Template data, e.g. '{\"order\": 42}'.")
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option(metavar="CHANNEL", help="email, sms or push (repeat; default: all it can)."),
    ] = None,
    category: Annotated[
        str | None, typer.Option(metavar="CATEGORY", help="Category (preferences apply to it).")
    ] = None,
    priority: Annotated[int, typer.Option(metavar="N", help="-100 to 100, higher first.")] = 0,
    send_at: Annotated[
        str | None, typer.Option(metavar="TIME", help="Not before this ISO 8601 time.")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(metavar="TIME", help="Not after this ISO 8601 time.")
    ] = None,
    chunk: Annotated[
        int, typer.Option(metavar="N", min=1, help="Recipients per chunk of a broadcast.")
    ] = DEFAULT_CHUNK,
    as_json: Json = False,
) -> None:
    """Send one notification, or broadcast one to a topic, a list or an SQL segment.

    \b
    Examples:
      outbox send --to user-7 --template order_confirmed --data '{"order": 42}'
      outbox send --address ada@example.com --template welcome
      outbox send --topic newsletter --template letter --message-id letter-2026-12
      outbox send --segment "SELECT id::text FROM app.users WHERE plan = 'pro'" \\
                  --template promo --category marketing
    """
    targets = [
        name
        for name, given in (
            ("--to", to),
            ("--address", address),
            ("--topic", topic),
            ("--segment", segment),
        )
        if given
    ]
    if len(targets) != 1:
        raise ValidationError(
            "give exactly one of --to RECIPIENT, --address ADDRESS, --topic TOPIC or "
            f"--segment SQL (got {', '.join(targets) or 'none'})",
            field="to",
        )
    content: dict[str, Any] = {
        "template": template,
        "data": _json_object(data),
        "channels": channel or None,
        "category": category,
        "priority": priority,
        "send_at": _moment(send_at),
        "expires_at": _moment(expires_at),
    }
    message_id = message_id or f"send-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    with connection() as conn:
        if address is not None or (to is not None and len(to) == 1):
            nid = outbox.enqueue(
                conn, message_id, recipient=to[0] if to else None, address=address, **content
            )
            conn.commit()
            if as_json:
                output.print_json({"message_id": message_id, "notification_id": nid})
            else:
                typer.echo(
                    f"enqueued {message_id} (notification {nid}); `outbox inspect {message_id}`"
                )
            return
        if to is not None:
            run = _list_run(conn, message_id, to, content)
        else:
            run = _chunked_run(conn, message_id, topic, segment, chunk, content)
        totals = _broadcast(conn, message_id, run, _total(conn, topic, segment, to), as_json)
    if as_json:
        output.print_json({"message_id": message_id, **totals})
        return
    typer.echo(
        f"broadcast {message_id}: {totals['targets']} recipients, {totals['enqueued']} enqueued, "
        f"{totals['already']} already had it, {totals['unreachable']} unreachable, "
        f"{totals['unknown']} unknown ({totals['chunks']} chunks, {totals['seconds']:.1f} s)"
    )


Chunks = Iterator[BroadcastResult]


def _list_run(conn: Any, message_id: str, to: list[str], content: dict[str, Any]) -> Chunks:
    yield outbox.broadcast(conn, message_id, recipients=to, **content)


def _chunked_run(
    conn: Any,
    message_id: str,
    topic: str | None,
    segment: str | None,
    chunk: int,
    content: dict[str, Any],
) -> Chunks:
    after: int | str | None = None
    while True:
        result = outbox.broadcast(
            conn,
            message_id,
            topic=topic,
            segment=segment,
            after_recipient=after,
            max_recipients=chunk,
            **content,
        )
        yield result
        if result.targets < chunk or result.last_recipient is None:
            return
        after = result.last_recipient


def _total(conn: Any, topic: str | None, segment: str | None, to: list[str] | None) -> int | None:
    """How many recipients the broadcast will look at, for the bar; None if this role
    cannot count them (a producer login reads no outbox table)."""
    if to is not None:
        return len(set(to))
    if topic is not None:
        statement: Any = query("send_topic_size")
        params: dict[str, Any] | None = {"topic": topic}
    else:
        spliced = pgsql.SQL((segment or "").strip().rstrip(";"))
        statement = pgsql.SQL(query("send_segment_size")).format(segment=spliced)
        params = None  # a '%' in the segment is not a placeholder
    try:
        with conn.transaction():
            row = conn.execute(statement, params).fetchone()
    except psycopg.Error:
        return None  # the broadcast itself says what is wrong with the segment
    return int(row[0])


def _broadcast(
    conn: Any, message_id: str, run: Chunks, total: int | None, as_json: bool
) -> dict[str, Any]:
    """Run the chunks, committing each; show progress; return the summed counts."""
    sums = dict.fromkeys(("targets", "enqueued", "already", "unreachable", "unknown"), 0)
    started = time.perf_counter()
    chunks = 0
    err = output.console(stderr=True)
    with _progress(err, total, quiet=as_json) as advance:
        try:
            for result in run:
                conn.commit()
                chunks += 1
                for name in sums:
                    sums[name] += getattr(result, name)
                advance(result, sums)
        except BaseException:
            conn.rollback()
            if chunks:
                err.print(
                    f"hint: {chunks} chunk(s) of {message_id} were committed; run the same "
                    f"command with --message-id {message_id} to finish it (recipients "
                    "already covered are skipped)",
                    markup=False,
                )
            raise
    return {**sums, "chunks": chunks, "seconds": time.perf_counter() - started}


@contextmanager
def _progress(
    err: Any, total: int | None, *, quiet: bool
) -> Iterator[Callable[[BroadcastResult, dict[str, int]], None]]:
    """A callback to call after each chunk: a bar on a terminal, a line per chunk elsewhere."""
    if not err.is_terminal:

        def line(result: BroadcastResult, sums: dict[str, int]) -> None:
            if not quiet:
                of = f"/{total}" if total is not None else ""
                err.print(
                    f"chunk: {result.targets} recipients, {result.enqueued} enqueued "
                    f"({sums['targets']}{of} done)",
                    markup=False,
                )

        yield line
        return
    bar = Progress(
        TextColumn("broadcast"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[enqueued]} enqueued"),
        TimeElapsedColumn(),
        console=err,
    )
    task = bar.add_task("broadcast", total=total, enqueued=0)

    def advance(result: BroadcastResult, sums: dict[str, int]) -> None:
        bar.update(task, advance=result.targets, enqueued=sums["enqueued"])

    with bar:
        yield advance
