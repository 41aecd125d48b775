"""How the CLI prints: tables that fit the terminal, plain text when piped, JSON for scripts.

Every command that prints a table gets its console and its tables here, so
they all behave alike:

- the width is the terminal's (rich asks the terminal; ``COLUMNS`` overrides
  it; 80 when there is no terminal), never a fixed one;
- when stdout is not a terminal (a pipe, a file, a CI log) rich writes no
  colour codes, and :func:`table` draws no box, so ``grep`` and ``awk`` see
  plain columns;
- ``--json`` output goes through :func:`print_json`: plain JSON (no rich
  markup or highlighting), with the shapes documented in docs/operations.md.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from outbox.ops import jsonable

#: The ``--json`` flag, alike on every read command. ``metavar=""``: a flag
#: takes no value, so the help shows no type tag for it.
Json = Annotated[
    bool, typer.Option("--json", metavar="", help="Print JSON instead of tables (for scripts).")
]


def console(*, stderr: bool = False) -> Console:
    """A console as wide as the terminal (or ``COLUMNS``); plain text when not a terminal."""
    # highlight=False: rich's highlighter colours numbers and quoted words in
    # free text (ids, reasons) as if they were code.
    return Console(stderr=stderr, highlight=False)


def table(out: Console, title: str | None = None, **options: Any) -> Table:
    """A table for ``out``: boxed on a terminal, bare columns when piped.

    The title sits on the left, above the first column; the table is at least
    as wide as its title.
    """
    options.setdefault("box", box.HEAVY_HEAD if out.is_terminal else None)
    # Without a box, no padding at the edges: lines start in column one, for cut and awk.
    options.setdefault("pad_edge", options["box"] is not None)
    options.setdefault("title_justify", "left")
    if title is not None:
        # rich wraps a title to its table's width: "provider circuit breakers"
        # over a one-column table became three lines.
        options.setdefault("min_width", min(cell_len(title), out.width))
    return Table(title=title, **options)


def print_rows(
    out: Console,
    title: str,
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    *,
    label: str,
    folding: Collection[str] = (),
) -> None:
    """``cells`` as a table under ``headers``, or, on a terminal too narrow for it, one
    :func:`print_fields` block per row titled ``label`` and the row's first cell.

    Columns named in ``folding`` may wrap; the others (ids people copy) stay whole.
    Cells hold rich markup: escape values that come from the database.
    """
    grid = table(out, title)
    for column in headers:
        grid.add_column(column, no_wrap=column not in folding, overflow="fold")
    for row in cells:
        grid.add_row(*row)
    if fits(out, grid):
        out.print(grid)
        return
    out.print(f"[bold]{escape(title)}[/bold]")
    for row in cells:
        print_fields(out, f"{label} {row[0]}", list(zip(headers[1:], row[1:], strict=True)))


def print_fields(out: Console, title: str, rows: Iterable[tuple[str, str]]) -> None:
    """A block: ``title`` on a line, then one indented ``name  value`` line per row.

    Names stay whole; values get the rest of the width and fold (never cut). No
    box even on a terminal: each column a box takes is one a value loses, and
    with names up to 12 characters a 64-character token still fits 80 columns.
    ``rows`` hold rich markup: escape values that come from the database.
    """
    grid = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    grid.add_column("name", style="bold", no_wrap=True)
    grid.add_column("value", overflow="fold")
    for name, value in rows:
        grid.add_row(name, value)
    out.print(Text(title, style="bold"))
    out.print(Padding(grid, (0, 0, 0, 2)))


@contextmanager
def live(out: Console, **options: Any) -> Iterator[Live]:
    """rich's ``Live`` display, ending with a newline when the output is not a terminal.

    Off a terminal, ``Live`` prints only its final state, and (rich 15) without
    the line break it adds on a terminal: whatever is printed next would start
    on the last line of that final state (a table's bottom border).
    """
    with Live(console=out, **options) as display:
        yield display
    if not out.is_terminal:
        out.line()


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout: ISO 8601 timestamps in UTC, numbers as numbers."""
    # typer.echo, not rich: rich would wrap long strings and could read [brackets] as markup.
    typer.echo(json.dumps(jsonable(data), indent=2))


def fits(out: Console, grid: Table, *, squeeze: int = 24) -> bool:
    """Whether ``grid`` fits ``out``'s width with no column cut below what it needs.

    Columns that must stay whole (``no_wrap``) need their widest cell; a column
    that folds is content with ``squeeze`` columns (it wraps onto more lines).
    When a table does not fit, the caller prints its rows as blocks
    (:func:`print_fields`) instead: rich would otherwise squeeze columns down to one letter.
    """
    need = 0
    for column in grid.columns:
        widest = max(
            (out.measure(cell).maximum for cell in (column.header, *column.cells)), default=0
        )
        need += widest if column.no_wrap else min(widest, squeeze)
    left, right = grid.padding[1], grid.padding[3]
    # Each column's padding, and with a box a rule between columns and at both edges.
    need += len(grid.columns) * (left + right) + (len(grid.columns) + 1 if grid.box else 0)
    return need <= out.width
