"""The CLI's output helper without a database: width, plain text when piped, Live's last line."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import typer
from rich.console import Console
from rich.table import Table

from outbox import ops
from outbox.cli import output
from outbox.cli.common import parse_duration
from outbox.errors import ValidationError


def _piped(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, highlight=False), buffer


def test_the_console_takes_its_width_from_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "93")
    assert output.console().width == 93
    monkeypatch.setenv("COLUMNS", "211")
    assert output.console().width == 211


def test_a_piped_table_has_no_box_and_a_terminal_one_has(monkeypatch):
    out, buffer = _piped()
    grid = output.table(out, "t")
    grid.add_column("a")
    grid.add_row("1")
    out.print(grid)
    assert buffer.getvalue().splitlines() == ["t", "a", "1"]
    terminal = Console(file=io.StringIO(), force_terminal=True, width=80)
    assert output.table(terminal, "t").box is not None


def test_a_title_wider_than_its_table_stays_on_one_line():
    out, buffer = _piped()
    grid = output.table(out, "provider circuit breakers")
    grid.add_column("provider")
    out.print(grid)
    assert buffer.getvalue().splitlines()[0].rstrip() == "provider circuit breakers"


def test_live_ends_its_last_frame_with_a_newline_when_piped():
    # rich 15 leaves the cursor on the last line of Live's final frame when the
    # output is not a terminal: the demo's next table started on that line.
    out, buffer = _piped()
    grid = Table(title="progress")
    grid.add_column("done")
    grid.add_row("3/3")
    with output.live(out, transient=False) as live:
        live.update(grid)
    out.print("after")
    lines = buffer.getvalue().splitlines()
    assert lines[-1] == "after"
    assert lines[-2].startswith("└") and lines[-2].endswith("┘")


def test_fits_counts_whole_columns_and_squeezes_folding_ones():
    out, _ = _piped(width=80)
    grid = output.table(out, None)
    grid.add_column("id", no_wrap=True)
    grid.add_column("token", no_wrap=True)
    grid.add_row("3", "x" * 60)
    assert output.fits(out, grid)  # 1 + 60 + 2 * 2 of padding
    grid.add_column("reason", overflow="fold")
    grid.add_row("4", "x" * 60, "a long reason " * 10)
    assert not output.fits(out, grid)  # the reason would get 13 columns, not 24
    assert output.fits(_piped(width=100)[0], grid)


def test_print_fields_keeps_a_64_character_token_on_one_line_at_80_columns():
    out, buffer = _piped(width=80)
    token = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    output.print_fields(out, "delivery 3", [("destination", token), ("provider id", "-")])
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "delivery 3"
    assert lines[1].split() == ["destination", token]
    assert max(len(line) for line in lines) <= 80


def test_jsonable_gives_iso_utc_timestamps_and_numbers():
    paris = timezone(timedelta(hours=1))
    doc = ops.jsonable(
        {
            "at": datetime(2026, 12, 1, 10, 30, tzinfo=paris),
            "id": 7,
            "count": Decimal("3"),
            "ratio": Decimal("0.25"),
            "age": timedelta(minutes=2),
            "rows": ({"n": None},),
        }
    )
    assert doc == {
        "at": "2026-12-01T09:30:00+00:00",
        "id": 7,
        "count": 3,
        "ratio": 0.25,
        "age": 120.0,
        "rows": [{"n": None}],
    }
    assert json.loads(json.dumps(doc)) == doc
    assert datetime.fromisoformat(doc["at"]).tzinfo == UTC


def test_one_duration_parser_for_the_library_and_the_cli():
    assert ops.parse_duration("90s") == timedelta(seconds=90)
    assert ops.parse_duration(" 1.5h ") == timedelta(minutes=90)
    assert ops.parse_duration("2w") == timedelta(days=14)
    assert ops.parse_age("30d") == parse_duration("30d") == timedelta(days=30)
    with pytest.raises(ValidationError, match="'7 days' is not a duration") as caught:
        ops.parse_duration("7 days", field="since")
    assert caught.value.field == "since"
    with pytest.raises(typer.BadParameter, match="'7 days' is not a duration"):
        parse_duration("7 days")
