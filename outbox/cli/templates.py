"""``outbox templates``: push a folder of templates; list, show, diff, render, roll back.

The folder layout is :mod:`outbox.template_folder`'s (and docs/templates.md's).
``push`` checks the whole folder first (layout, and that every template
compiles) and writes nothing if anything is wrong; then, in one transaction, it
adds a version only where the content differs from the newest stored version
(same content hash as :func:`outbox.templates.content_hash`), so pushing an
unchanged folder is a no-op. It never activates an older version back (a
rollback survives the next push) and never deletes anything.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg.rows import dict_row
from rich.markup import escape

from outbox import api
from outbox.channel_limits import check_limits, push_payload_size, sms_segments
from outbox.cli import output
from outbox.cli.common import actor, connection
from outbox.cli.output import Json
from outbox.errors import ValidationError
from outbox.sql import query
from outbox.template_folder import compile_problems, load_folder
from outbox.templates import (
    CHANNELS,
    FIELDS,
    TemplateError,
    TemplateVersion,
    locale_chain,
    render,
)

app = typer.Typer(
    help="Template versions: push a folder, list, show, diff, render a preview, roll back.",
    no_args_is_help=True,
)


def _fail(*problems: str) -> typer.Exit:
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    return typer.Exit(1)


# --- database --------------------------------------------------------------------------------


def _rows(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params)
        return cur.fetchall()


def _version(row: dict[str, Any]) -> TemplateVersion:
    return TemplateVersion(
        id=row["id"],
        key=row["key"],
        channel=row["channel"],
        locale=row["locale"],
        version=row["version"],
        subject=row["subject"],
        body=row["body"],
        html_body=row["html_body"],
        title=row["title"],
        content_hash=row["content_hash"],
    )


def _versions(
    conn: psycopg.Connection,
    key: str,
    channel: str | None = None,
    locale: str | None = None,
    version: int | None = None,
) -> list[dict[str, Any]]:
    rows = _rows(
        conn, "template_versions", key=key, channel=channel, locale=locale, version=version
    )
    if not rows:
        what = ", ".join(
            f"{k} {v}"
            for k, v in (("channel", channel), ("locale", locale), ("version", version))
            if v is not None
        )
        raise _fail(f"no template {key!r}" + (f" with {what}" if what else ""))
    return rows


# --- commands --------------------------------------------------------------------------------


@app.command()
def push(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder of templates (see docs/templates.md).")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", metavar="", help="Show what would change; write nothing.")
    ] = False,
    activate: Annotated[bool, typer.Option(help="Make new versions the active ones.")] = True,
) -> None:
    """Store a new version of each template in DIR whose content changed; leave the rest alone.

    \b
    Examples:
      outbox templates push templates/ --dry-run
      outbox templates push templates/
    """
    try:
        sources = load_folder(folder)
    except ValidationError as exc:
        raise _fail(*str(exc).splitlines()) from None
    broken = compile_problems(sources)
    if broken:
        raise _fail(*broken, "nothing was pushed")

    out = output.console()
    table = output.table(
        out, f"templates in {folder}" + (" (dry run: nothing written)" if dry_run else "")
    )
    for column in ("template", "channel", "locale", "result", "active"):
        table.add_column(column, overflow="fold")
    changed = 0
    with connection() as conn:
        heads = {
            (h["key"], h["channel"], h["locale"]): h
            for h in _rows(conn, "template_heads", keys=sorted({s.key for s in sources}))
        }
        for s in sources:
            head = heads.get((s.key, s.channel, s.locale))
            if head is not None and head["latest_hash"] == s.content_hash:
                result, active = f"unchanged (v{head['latest']})", head["active"]
            else:
                changed += 1
                new = (head["latest"] if head else 0) + 1
                if not dry_run:
                    new = api.create_template(
                        conn,
                        s.key,
                        s.channel,
                        s.body,
                        subject=s.subject,
                        html_body=s.html_body,
                        title=s.title,
                        locale=s.locale,
                        activate=activate,
                    )
                result = f"new v{new}"
                active = new if activate else (head["active"] if head else None)
            table.add_row(s.key, s.channel, s.locale, result, f"v{active}" if active else "none")
        if dry_run:
            conn.rollback()
    out.print(table)
    verb = "would add" if dry_run else "added"
    typer.echo(
        f"{verb} {changed} new version{'' if changed == 1 else 's'}; "
        f"{len(sources) - changed} unchanged"
    )


@app.command("list")
def list_(
    key: Annotated[str | None, typer.Option(metavar="KEY", help="Only this template key.")] = None,
    as_json: Json = False,
) -> None:
    """Every template: channel, locale, active and newest version.

    \b
    Examples:
      outbox templates list
      outbox templates list --key welcome --json
    """
    with connection() as conn:
        rows = _rows(conn, "template_summary", key=key)
    if as_json:
        output.print_json(rows)
        return
    out = output.console()
    table = output.table(out, f"templates ({len(rows)})")
    for column in ("template", "channel", "locale", "active", "newest", "versions", "updated"):
        # Keys are typed back into the next command: folded if they must, never cut.
        table.add_column(column, overflow="fold", no_wrap=column != "template")
    for r in rows:
        table.add_row(
            escape(r["key"]),
            r["channel"],
            escape(r["locale"]),
            f"v{r['active']}" if r["active"] else "none",
            f"v{r['latest']}",
            str(r["versions"]),
            r["updated_at"].strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)


Key = Annotated[str, typer.Argument(metavar="KEY", help="Template key.")]
Channel = Annotated[
    str | None,
    typer.Option(metavar="CHANNEL", help="email, sms or push (default: every channel)."),
]
Locale = Annotated[
    str | None,
    typer.Option(
        metavar="LOCALE", help="Locale such as fr-CA, or default (default: every locale)."
    ),
]


@app.command()
def show(
    key: Key,
    channel: Channel = None,
    locale: Locale = None,
    version: Annotated[
        int | None, typer.Option(metavar="N", help="This version (default: the active one).")
    ] = None,
    as_json: Json = False,
) -> None:
    """The versions of a template, and the content of the active (or the given) version.

    \b
    Examples:
      outbox templates show welcome --channel sms
      outbox templates show welcome --version 2 --json
    """
    with connection() as conn:
        rows = _versions(conn, key, channel, locale)
    wanted = [r for r in rows if (r["version"] == version if version is not None else r["active"])]
    if version is not None and not wanted:
        raise _fail(
            f"template {key!r} has no version {version}" + (f" for {channel}" if channel else "")
        )
    if as_json:
        # Every version's metadata; the content only of the shown ones, as on screen.
        shown = {r["id"] for r in wanted}
        output.print_json(
            [{k: v for k, v in r.items() if r["id"] in shown or k not in FIELDS} for r in rows]
        )
        return
    console = output.console()
    table = output.table(console, f"versions of {escape(key)}")
    for column in ("channel", "locale", "version", "active", "created", "content hash"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r["channel"],
            escape(r["locale"]),
            f"v{r['version']}",
            "active" if r["active"] else "",
            r["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            r["content_hash"][:12],
        )
    console.print(table)
    for r in wanted:
        console.rule(
            escape(
                f"{key} · {r['channel']} · {r['locale']} · v{r['version']}"
                + (" (active)" if r["active"] else "")
            )
        )
        for field in FIELDS:
            if r[field] is not None:
                console.print(f"[bold]{field}[/bold]")
                console.print(escape(r[field]), highlight=False)


@app.command()
def diff(
    key: Key,
    from_: Annotated[int, typer.Option("--from", metavar="N", help="Old version.")],
    to: Annotated[int, typer.Option("--to", metavar="N", help="New version.")],
    channel: Channel = None,
    locale: Locale = None,
) -> None:
    """A unified diff of each field between two versions (per channel and locale having both)."""
    with connection() as conn:
        rows = _versions(conn, key, channel, locale)
    by_variant: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault((r["channel"], r["locale"]), {})[r["version"]] = r
    pairs = [
        (variant, v[from_], v[to]) for variant, v in by_variant.items() if from_ in v and to in v
    ]
    if not pairs:
        have = "; ".join(
            f"{c} ({loc}): v{', v'.join(str(n) for n in sorted(v))}"
            for (c, loc), v in sorted(by_variant.items())
        )
        raise _fail(
            f"template {key!r} has no channel and locale with both v{from_} and v{to}"
            f" (it has {have})"
        )
    console = output.console()
    for (ch, loc), old, new in pairs:
        console.rule(f"{key} · {ch} · {loc} · v{from_} → v{to}")
        if old["content_hash"] == new["content_hash"]:
            console.print("(identical content)")
            continue
        for field in FIELDS:
            if old[field] is None and new[field] is None:
                continue
            if old[field] is None or new[field] is None:
                # A field that appears or disappears: say so, since "" and absent differ.
                console.print(
                    f"[bold]{field}: {'added' if old[field] is None else 'removed'}[/bold]"
                )
            for line in difflib.unified_diff(
                (old[field] or "").splitlines(),
                (new[field] or "").splitlines(),
                f"v{from_}/{field}",
                f"v{to}/{field}",
                lineterm="",
            ):
                style = (
                    "bold"
                    if line.startswith(("---", "+++"))
                    else "green"
                    if line.startswith("+")
                    else "red"
                    if line.startswith("-")
                    else "cyan"
                    if line.startswith("@@")
                    else ""
                )
                console.print(
                    f"[{style}]{escape(line)}[/{style}]" if style else escape(line), highlight=False
                )


def _data(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {text[1:]!r}: {exc.strerror}", param_hint="--data"
            ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            param_hint="--data",
        ) from None
    if not isinstance(data, dict):
        raise typer.BadParameter(
            f"must be a JSON object, got {type(data).__name__}", param_hint="--data"
        )
    return data


@app.command("render")
def render_(
    key: Key,
    data: Annotated[
        str, typer.Option(metavar="JSON", help="Template data: a JSON object, or @file.json.")
    ] = "{}",
    channel: Channel = None,
    locale: Annotated[
        str | None,
        typer.Option(
            metavar="LOCALE",
            help="Recipient locale; falls back like a send does (fr-CA -> fr -> default).",
        ),
    ] = None,
) -> None:
    """Preview: render the active version(s) with DATA as a send would; check channel limits.

    \b
    Examples:
      outbox templates render welcome --data '{"name": "Zoé"}' --locale fr-CA
      outbox templates render reset --channel sms --data @data.json
    """
    values = _data(data)
    if channel is not None and channel not in CHANNELS:
        raise typer.BadParameter(
            f"unknown channel {channel!r} (expected {', '.join(CHANNELS)})", param_hint="--channel"
        )
    try:
        chain = locale_chain(locale)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--locale") from None
    console = output.console()
    failed = False
    with connection() as conn:
        channels = [channel] if channel else sorted({r["channel"] for r in _versions(conn, key)})
        found = {
            ch: _rows(conn, "template_active_for_locales", key=key, channel=ch, locales=chain)
            for ch in channels
        }
    for ch in channels:
        if not found[ch]:
            failed = True
            typer.echo(
                f"error: template {key!r} has no active {ch} version for locale "
                f"{' -> '.join(chain)}",
                err=True,
            )
            continue
        template = _version(found[ch][0])
        console.rule(f"{key} · {ch} · {template.locale} · v{template.version}")
        try:
            rendered = render(template, values)
            check_limits(ch, rendered, values, template=template)
        except TemplateError as exc:
            failed = True
            typer.echo(f"error: {exc}", err=True)
            continue
        for field in FIELDS:
            value = getattr(rendered, field)
            if value is not None:
                console.print(f"[bold]{field}[/bold]")
                console.print(escape(value), highlight=False)
        if ch == "sms":
            encoding, segments = sms_segments(rendered.body)
            console.print(
                f"[dim]{segments} segment{'' if segments == 1 else 's'} ({encoding})[/dim]"
            )
        elif ch == "push":
            console.print(f"[dim]payload {push_payload_size(rendered, values)} bytes[/dim]")
    if failed:
        raise typer.Exit(1)


@app.command()
def rollback(
    key: Key,
    to: Annotated[int, typer.Option("--to", metavar="N", help="The version to make active again.")],
    channel: Channel = None,
    locale: Locale = None,
) -> None:
    """Make an older (or any) version the active one again; recorded as an event."""
    with connection() as conn:
        rows = _versions(conn, key, channel, locale, version=to)
        if len(rows) > 1:
            which = ", ".join(f"{r['channel']} ({r['locale']})" for r in rows)
            raise _fail(
                f"template {key!r} has a v{to} for {which}: say which with --channel and --locale"
            )
        target = rows[0]
        previous = next(
            (
                r["version"]
                for r in _versions(conn, key, target["channel"], target["locale"])
                if r["active"]
            ),
            None,
        )
        api.activate_template(
            conn, key, target["channel"], to, locale=target["locale"], actor=actor()
        )
    if previous == to:
        typer.echo(f"{key} {target['channel']} ({target['locale']}): v{to} is already active")
    else:
        typer.echo(
            f"{key} {target['channel']} ({target['locale']}): active version is now v{to}"
            + (f" (was v{previous})" if previous else "")
        )
