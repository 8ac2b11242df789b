"""How ``podpulse ... --help`` shows options and arguments, in one style for every command.

typer (0.29) prints a parameter's Python type as its value placeholder: ``--json <bool>`` (a
flag takes no value: ``--json true`` is an error), ``--from <list[str]>``, ``<str>``, and a
required argument as ``{run_id}`` in the usage line. It builds the parameter objects itself,
with no hook for their class, so :func:`podpulse_classes` gives every command of the ``podpulse``
tree a command class whose parameters are re-classed to subclasses that show instead:

* a flag: no placeholder (``--json``, ``--no-json`` only where the default is true);
* a value: ``<integer>``, ``<number>``, ``<string>``, ``<path>`` (the words of
  docs/configuration.md), the choices of a ``Literal`` or enum (``<hosted|twin>``), or the
  command's own ``metavar``; a repeatable option shows its item (its help says repeatable);
* an argument: its name in capitals, ``RUN_ID``, ``[FILE]`` when optional, ``MATCHERS...``;
* a default: ``[default: X]``, typer's own style, for a default that lives in the code and for
  one the command resolves at run time (``show_default="STACK_TWIN_PORT, else 8765"``, see
  :func:`env_default`), without the parentheses typer puts around the latter;
* a command's help: each paragraph one line, which the terminal wraps at its width;
* help piped or redirected (no terminal, no COLUMNS): click's plain layout, never wrapped.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

import typer
from pydantic_settings import BaseSettings
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder

from .output import plain
from .settings import settings_variable

__all__ = ["PodpulseCommand", "PodpulseGroup", "env_default", "podpulse_classes"]

# typer's labels (inside its <...>) for the types podpulse's commands take.
_WORDS = {
    "str": "string",
    "int": "integer",
    "int range": "integer",
    "float": "number",
    "float range": "number",
    "bool": "boolean",
}


def env_default(settings_cls: type[BaseSettings], field_name: str) -> str:
    """``"VARIABLE, else DEFAULT"`` for ``show_default``: the variable a flag falls back to.

    The default is read from the field, so the help cannot drift from the settings.
    """
    variable = settings_variable(settings_cls, field_name)
    field = settings_cls.model_fields[field_name]
    value = field.get_default(call_default_factory=True)
    if value is None:
        return variable
    shown = getattr(value, "value", value)  # an enum member as written in the environment
    if isinstance(shown, float):
        shown = plain(shown, digits=6)
    return f"{variable}, else {shown}"


def _readable(label: str) -> str:
    """typer's ``<list[str]>``, ``<int range>`` as ``<string>``, ``<integer>``; choices as given."""
    inner = label.removeprefix("<").removesuffix(">")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner.removeprefix("list[").removesuffix("]")
    return f"<{_WORDS.get(inner, inner)}>"


class _Option(TyperOption):
    """A typer option that shows no placeholder for a flag and no Python type for a value."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        if self.metavar is not None:
            return self.metavar
        return _readable(self.display_type(ctx))

    def _get_default_string(
        self, *, ctx: Any, show_default_is_str: bool, default_value: Any
    ) -> str:
        if show_default_is_str:
            return str(self.show_default)
        return super()._get_default_string(
            ctx=ctx, show_default_is_str=show_default_is_str, default_value=default_value
        )


class _Argument(TyperArgument):
    """A typer argument named in capitals, as usage lines name what the user types."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return _readable(self.display_type(ctx))

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return f"{name}..." if self.nargs != 1 else name


def _unwrapped(text: str | None) -> str | None:
    """*text* with each paragraph on one line: rich markup mode keeps a docstring's line
    breaks, which a terminal wider than the source then shows as ragged, hard-broken lines."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    # "\b" marks a paragraph its author laid out line by line (click's convention).
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _reclass(params: list[Any]) -> None:
    for param in params:
        # Same layout, behaviour added only: the subclasses carry no state of their own.
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument


# Wider than any help line: click wraps text at the formatter's width.
_NO_WRAP = 100_000


def _to_a_file() -> bool:
    """Help is going to a pipe or file and no width was asked for (COLUMNS, TERMINAL_WIDTH)."""
    if os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH"):
        return False
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by something file-like, or closed
        return True


class _PodpulseStyle:
    """What a command and a group share: unwrapped help text, parameters in podpulse's style."""

    help: str | None
    rich_markup_mode: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _unwrapped(self.help)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if not _to_a_file():
            return super().format_help(ctx, formatter)  # type: ignore[misc, no-any-return]  # a mixin: click's Command
        # Piped or redirected: click's plain layout at no width, so each option stays one
        # line (rich would box it at 80 columns and wrap every row).
        formatter.width = _NO_WRAP
        markup, self.rich_markup_mode = self.rich_markup_mode, None
        try:
            super().format_help(ctx, formatter)  # type: ignore[misc]  # a mixin: click's Command
        finally:
            self.rich_markup_mode = markup

    def get_params(self, ctx: Any) -> list[Any]:
        # Here rather than in __init__: typer adds --help (and the root its completion
        # options) after building the command; help, usage and errors all come through here.
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]  # a mixin: click's Command
        _reclass(params)
        return params


class PodpulseCommand(_PodpulseStyle, TyperCommand):
    """A typer command whose parameters (``--help`` included) show in podpulse's style."""


class PodpulseGroup(_PodpulseStyle, TyperGroup):
    """A typer group whose options (``--help`` included) show in podpulse's style."""


def podpulse_classes(app: typer.Typer) -> typer.Typer:
    """*app* with every command and group under it built as a podpulse command or group.

    A class a service chose itself is kept. Returns *app*, changed in place.
    """
    if _is_default(app.info.cls):
        app.info.cls = PodpulseGroup
    for command in app.registered_commands:
        if _is_default(command.cls):
            command.cls = PodpulseCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            podpulse_classes(group.typer_instance)
    return app


def _is_default(cls: Any) -> bool:
    # None or typer's placeholder where nothing was given; app.command() fills in TyperCommand.
    return cls in (None, TyperCommand, TyperGroup) or isinstance(cls, DefaultPlaceholder)
