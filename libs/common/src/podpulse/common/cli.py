"""The ``podpulse`` command: whatever commands the installed podpulse services contribute.

Each service registers a typer sub-app (or a single function) under the entry-point group
``podpulse.cli``; the entry's name is the command's name. A service whose CLI fails to import
costs only its own commands: the others still work, and the error is one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from importlib.metadata import EntryPoint

import typer
from pydantic import ValidationError

from ._help import env_default, podpulse_classes
from .logging import configure_logging
from .settings import CommonSettings, describe_settings_error
from .settings_doc import SettingsDocError, installed_settings, render

__all__ = [
    "ENTRY_POINT_GROUP",
    "app_from_installed",
    "build_app",
    "env_default",
    "for_command",
    "main",
]

ENTRY_POINT_GROUP = "podpulse.cli"
_BUILTIN_COMMANDS = frozenset({"version", "config-doc"})


def build_app(entry_points: Iterable[EntryPoint]) -> typer.Typer:
    """The root app with a command per loadable entry point, plus ``version`` and ``config-doc``."""
    app = typer.Typer(
        name="podpulse",
        help="Probe, alert on and release a model served on RunPod serverless.",
        rich_markup_mode="rich",
        no_args_is_help=True,
        # Tracebacks with locals could print a secret read into a variable.
        pretty_exceptions_show_locals=False,
    )

    @app.callback()
    def _root() -> None:
        # A callback keeps this a group even with one command, so `podpulse version` stays
        # `podpulse version` instead of collapsing into `podpulse`.
        return None

    app.command("version", help="List the installed podpulse distributions and versions.")(_version)
    app.command(
        "config-doc",
        help="Print the configuration reference (docs/configuration.md) for what is installed.",
    )(_config_doc)

    seen = set(_BUILTIN_COMMANDS)
    for plugin in sorted(entry_points, key=lambda ep: ep.name):
        if plugin.name in seen:
            _report(plugin, "a command of that name is already registered")
            continue
        try:
            target = plugin.load()
        except Exception as exc:  # whatever a plugin raises on import must spare the others
            _report(plugin, f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=plugin.name)
        elif callable(target):
            app.command(plugin.name)(target)
        else:
            _report(plugin, f"expected a typer.Typer or a function, got {type(target).__name__}")
            continue
        seen.add(plugin.name)
    # Every command's help in one style, whichever service wrote it (see _help).
    return podpulse_classes(app)


def for_command(entry_points: Iterable[EntryPoint], args: Sequence[str]) -> list[EntryPoint]:
    """The entry points to load for the command line *args* (what follows ``podpulse``).

    When *args* starts with a command some entry point provides, only that command's entry
    points: importing every service's CLI costs about a second of start-up that ``podpulse
    release`` or ``podpulse keys rotate`` (run from scripts, hooks and tests) would pay for
    commands it never shows. Anything else (no command, an option such as ``--help``,
    ``version``, a typo) takes them all, so the root help lists every command and a typo gets
    its suggestions.
    """
    every = list(entry_points)
    wanted = args[0] if args else ""
    return [plugin for plugin in every if plugin.name == wanted] or every


def app_from_installed(args: Sequence[str] = ()) -> typer.Typer:
    """The root app for *args*, from the entry points of the installed distributions."""
    return build_app(for_command(metadata.entry_points(group=ENTRY_POINT_GROUP), args))


def main() -> None:
    """Console-script entry point for ``podpulse``: settings and logging once, then the app."""
    try:
        settings = CommonSettings()
    except ValidationError as exc:
        problems = describe_settings_error(exc)
        print(f"podpulse: invalid settings in the environment: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings)
    app_from_installed(sys.argv[1:])(prog_name="podpulse")


def _version() -> None:
    found = {
        dist.metadata["Name"]: dist.version
        for dist in metadata.distributions()
        if (dist.metadata["Name"] or "").lower().replace("_", "-").startswith("podpulse-")
    }
    for name in sorted(found):
        typer.echo(f"{name} {found[name]}")


def _config_doc() -> None:
    try:
        text = render(installed_settings())
    except SettingsDocError as exc:
        typer.echo(f"podpulse config-doc: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(text, nl=False)


def _report(plugin: EntryPoint, why: str) -> None:
    # One line per broken plugin, on stderr, so `podpulse ... | jq` still gets clean stdout.
    first_line = why.splitlines()[0] if why else "unknown error"
    print(
        f"podpulse: skipping command {plugin.name!r} ({plugin.value}): {first_line}",
        file=sys.stderr,
    )
