"""How commands write for people: plain numbers, and consoles a pipe does not wrap."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from podpulse.common.output import PIPE_WIDTH, console, plain


@pytest.mark.parametrize(
    ("value", "kwargs", "shown"),
    [
        (10800.0, {}, "10800"),
        (-2030.4, {"sign": True}, "-2030"),
        (2070.0, {"sign": True}, "+2070"),
        (1.08e7, {}, "10800000"),
        (0.5, {}, "0.5"),
        (0.000123456, {}, "0.000123"),
        (3.858e-7, {"digits": 6}, "0.0000003858"),
        (59.873, {"digits": 6}, "59.873"),
        (1e-300, {}, "0"),
        (-0.0, {"sign": True}, "0"),
        (float("inf"), {"sign": True}, "+inf"),
        (float("nan"), {}, "nan"),
    ],
)
def test_plain_numbers_have_no_exponent(
    value: float, kwargs: dict[str, object], shown: str
) -> None:
    """Large and small numbers read as written by hand: no 'e+04', no trailing zeros."""
    assert plain(value, **kwargs) == shown  # type: ignore[arg-type]


def test_piped_console_keeps_long_lines_and_tables_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal (a file, a pipe) a 200-character line and a wide table row stay on one
    line each, where rich would wrap them at 80 columns."""
    monkeypatch.delenv("COLUMNS", raising=False)
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stdout", buffer)
    out = console()
    assert out.width == PIPE_WIDTH
    line = "evidence " + "x" * 200
    out.print(line)
    table = Table()
    table.add_column("Check")
    table.add_column("Evidence")
    table.add_row("no P95 degradation", "slope +12000 ms/min, " + "y" * 150)
    out.print(table)
    lines = buffer.getvalue().splitlines()
    assert line in lines
    assert any("y" * 150 in row for row in lines)


def test_columns_still_sets_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """COLUMNS, the user's way to ask for a width, wins over the wide pipe default."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert console().width == 100
