"""Every ``podpulse`` command's --help, as the installed services build it, reads one way:
flags without a placeholder, values without Python type names, choices listed, every default
as ``[default: X]``, arguments named in capitals, one-line command summaries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from podpulse.common.cli import ENTRY_POINT_GROUP, build_app

_APP = build_app(entry_points(group=ENTRY_POINT_GROUP))
# Wide enough that no help row wraps: a wrapped "[default: ...]" could not be counted.
_ENV = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}
_TYPE_NAMES = re.compile(r"<(?:str|int|float|bool|dict|list|tuple)\b|list\[|int range|float range")
# Options whose help names their choices: the metavar must list them.
_CHOICES = {
    ("loadtest", "--target"): "<hosted|twin>",
    ("loadtest", "--arrival"): "<closed|constant|poisson>",
    ("soak", "--target"): "<hosted|twin>",
    ("advise", "--job-loop"): "<fast|sdk>",
    ("endpoint update", "--scaler-type"): "<QUEUE_DELAY|REQUEST_COUNT>",
    ("endpoint update", "--workers-min"): "<integer>",
    ("twin serve", "--job-loop"): "<fast|sdk>",
    ("twin serve", "--scaler-type"): "<QUEUE_DELAY|REQUEST_COUNT>",
}


# Any: get_command() returns typer's vendored click classes, which typer keeps private.
def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


_TREE = list(_commands(typer.main.get_command(_APP)))


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(_APP, [*path, "--help"], env=_ENV)
    assert result.exit_code == 0, result.output
    return result.output


def _panels(text: str) -> str:
    """The Arguments and Options panels of a help page (not the command's own prose)."""
    rows = []
    inside = False
    for line in text.splitlines():
        if line.startswith(("╭─ Arguments", "╭─ Options")):
            inside = True
        elif line.startswith("╰"):
            inside = False
        elif inside:
            rows.append(line)
    return "\n".join(rows)


def test_the_walk_covers_every_installed_command() -> None:
    """The walk reaches the nested commands of each service (so the checks below mean it)."""
    paths = {" ".join(path) for path, _ in _TREE}
    assert {"loadtest", "endpoint update", "alerts silence add", "twin serve", "up"} <= paths


@pytest.mark.parametrize(
    "path", [path for path, _ in _TREE], ids=lambda p: " ".join(p) or "podpulse"
)
def test_help_shows_flags_values_and_defaults_in_one_style(path: tuple[str, ...]) -> None:
    """No <bool> or Python type in the help, no {placeholder}, and each option that has a
    default (in the code or resolved at run time) shows it once, as [default: X]."""
    text = _help(path)
    panels = _panels(text)
    assert "<bool>" not in text
    assert not _TYPE_NAMES.search(text), _TYPE_NAMES.search(text)
    assert "{" not in text
    command = dict(_TREE)[path]
    valued = [
        p
        for p in command.params
        if isinstance(p, typer.core.TyperOption)
        and not p.is_flag
        and not p.required
        and not p.hidden
    ] + [
        p
        for p in command.params
        if isinstance(p, typer.core.TyperArgument) and not p.required and p.nargs == 1
    ]
    for param in valued:
        assert isinstance(param.show_default, str) or param.default is not None, (
            f"{' '.join(path)} {param.opts}: no default shown"
        )
    assert panels.count("[default: ") == len(valued), panels
    # The one style: no "(default ...)", "default:" or "[VARIABLE, x]" written into a help.
    assert panels.lower().count("default") == panels.count("[default: "), panels
    assert not re.search(r"\[[A-Z][A-Z_]+[,;\]]", panels), panels


@pytest.mark.parametrize(("command", "option"), sorted(_CHOICES))
def test_choices_are_listed(command: str, option: str) -> None:
    """An option taking one of a few words lists them where its value goes."""
    rows = [line for line in _help(tuple(command.split())).splitlines() if f" {option} " in line]
    assert rows
    assert _CHOICES[command, option] in rows[0], rows


def test_flags_take_no_value() -> None:
    """--json is a flag: given a value, the value is an unexpected argument (exit 2)."""
    result = CliRunner().invoke(_APP, ["releases", "--json", "true"])
    assert result.exit_code == 2
    assert "true" in result.output


def test_command_help_has_no_hard_line_breaks() -> None:
    """Each paragraph of a command's help (its summary first) is one line, so the terminal
    wraps it at its own width instead of at the docstring's."""
    for path, command in _TREE:
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, f"{' '.join(path)}: {paragraph!r}"
    loadtest = _help(("loadtest",))
    assert "Exits 1 when the SLO fails (a sweep: when no level can be recommended). Set OTEL_" in (
        loadtest
    )


def test_help_written_to_a_file_is_not_wrapped() -> None:
    """Piped or redirected with no width asked for, help is click's plain layout with every
    option and its whole help on one line, not rich's boxes cut at 80 columns."""
    result = CliRunner().invoke(
        _APP, ["loadtest", "--help"], env={"COLUMNS": None, "TERMINAL_WIDTH": None}
    )
    assert result.exit_code == 0, result.output
    rows = [
        line for line in result.output.splitlines() if line.lstrip().startswith("--concurrency")
    ]
    assert len(rows) == 1, result.output
    assert rows[0].rstrip().endswith("[default: 1; open loop: no cap]"), rows
    assert max(len(line) for line in result.output.splitlines()) > 80
    assert "╭" not in result.output
