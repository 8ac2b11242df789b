"""The podpulse command: gathering plugins, surviving broken ones, and the console script.

All in-process: the console script pip writes only imports and calls cli.main.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from importlib import metadata
from importlib.metadata import EntryPoint
from pathlib import Path
from uuid import uuid4

import pytest
import structlog
from typer.testing import CliRunner

from podpulse.common.cli import ENTRY_POINT_GROUP, build_app, for_command, main

_PLUGIN = '''
import typer

twin = typer.Typer(help="Run the local twin.")

@twin.command()
def up(port: int = 8000) -> None:
    """Start it."""
    typer.echo(f"up on {port}")

@twin.command()
def down() -> None:
    """Stop it."""
    typer.echo("down")

def ping() -> None:
    """Answer pong."""
    typer.echo("pong")

not_a_command = 42
'''


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two importable modules in a fresh directory: a good plugin and one that raises on import."""
    name = f"fake_plugin_{uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_PLUGIN))
    (tmp_path / f"{name}_broken.py").write_text('raise RuntimeError("db down\\nsecond line")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_typer_apps_and_functions_become_commands(plugin_module: str) -> None:
    """A Typer entry becomes a sub-app, a function a command, both under the entry's name."""
    app = build_app([_ep("twin", f"{plugin_module}:twin"), _ep("ping", f"{plugin_module}:ping")])
    runner = CliRunner()
    assert runner.invoke(app, ["twin", "up", "--port", "9"]).output == "up on 9\n"
    assert runner.invoke(app, ["ping"]).output == "pong\n"
    help_text = runner.invoke(app, ["--help"]).output
    assert all(word in help_text for word in ("twin", "ping", "version"))


def test_broken_plugins_cost_only_themselves(
    plugin_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Import errors, missing modules and non-callables each print one stderr line; others work."""
    app = build_app(
        [
            _ep("twin", f"{plugin_module}:twin"),
            _ep("broken", f"{plugin_module}_broken:app"),
            _ep("missing", "podpulse_no_such_module_anywhere:app"),
            _ep("number", f"{plugin_module}:not_a_command"),
        ]
    )
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"podpulse: skipping command 'broken' ({plugin_module}_broken:app): RuntimeError: db down",
        "podpulse: skipping command 'missing' (podpulse_no_such_module_anywhere:app): "
        "ModuleNotFoundError: No module named 'podpulse_no_such_module_anywhere'",
        f"podpulse: skipping command 'number' ({plugin_module}:not_a_command): "
        "expected a typer.Typer or a function, got int",
    ]
    result = CliRunner().invoke(app, ["twin", "down"])
    assert (result.exit_code, result.output) == (0, "down\n")


def test_a_name_is_taken_once(plugin_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A plugin may not shadow 'version' or an earlier plugin of the same name."""
    app = build_app(
        [
            _ep("ping", f"{plugin_module}:ping"),
            _ep("ping", f"{plugin_module}:twin"),
            _ep("version", f"{plugin_module}:ping"),
        ]
    )
    err = capsys.readouterr().err
    assert err.count("a command of that name is already registered") == 2
    assert CliRunner().invoke(app, ["ping"]).output == "pong\n"


def test_a_command_loads_only_its_own_plugin(
    plugin_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`podpulse ping` never imports another command's plugin; `--help` and typos load all."""
    plugins = [_ep("ping", f"{plugin_module}:ping"), _ep("bad", f"{plugin_module}_broken:x")]
    app = build_app(for_command(plugins, ["ping", "--verbose"]))
    assert capsys.readouterr().err == ""  # the broken plugin was never imported
    assert CliRunner().invoke(app, ["ping"]).output == "pong\n"
    for args in ([], ["--help"], ["pnig"], ["version"]):
        assert for_command(plugins, args) == plugins, args


def test_version_lists_installed_podpulse_distributions() -> None:
    """'podpulse version' prints 'name version' for each installed podpulse-* distribution."""
    result = CliRunner().invoke(build_app([]), ["version"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "podpulse-common 0.1.0" in lines
    assert all(line.startswith("podpulse-") for line in lines)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """main() configures logging for the process; put the test process's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("_restore_logging")
def test_console_script_is_main_and_help_exits_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The installed `podpulse` script is cli.main; `podpulse --help` exits 0 listing commands."""
    (script,) = metadata.entry_points(group="console_scripts", name="podpulse")
    assert script.load() is main
    monkeypatch.setattr(sys, "argv", ["podpulse", "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "version" in out
    assert "config-doc" in out


@pytest.mark.usefixtures("_restore_logging")
def test_bad_common_settings_exit_2_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad PODPULSE_LOG_LEVEL stops `podpulse` with exit 2, naming the variable only."""
    monkeypatch.setenv("PODPULSE_LOG_LEVEL", "chatty-canary")
    monkeypatch.setattr(sys, "argv", ["podpulse", "version"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("podpulse: invalid settings in the environment: PODPULSE_LOG_LEVEL: ")
    assert "canary" not in err.lower()
