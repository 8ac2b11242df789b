"""The configuration reference (docs/configuration.md), generated from the settings classes.

Each podpulse distribution registers its settings classes under the entry-point group
``podpulse.settings`` (``common = "podpulse.common.settings:CommonSettings"``); the reference
lists, per class, every variable it reads with its type, default and description, then the
secrets. The output depends only on the classes, never on the environment or the machine, so
a test can regenerate it and compare: ``podpulse config-doc > docs/configuration.md``, or
``python -m podpulse.common.settings_doc > docs/configuration.md``.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from importlib.metadata import EntryPoint
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, NoDecode

from podpulse.common.settings import KNOWN_SECRETS, Secret, settings_variable

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGENERATE_COMMAND",
    "SettingsDocError",
    "installed_settings",
    "load_settings",
    "main",
    "render",
]

ENTRY_POINT_GROUP = "podpulse.settings"
REGENERATE_COMMAND = "podpulse config-doc > docs/configuration.md"

# pydantic keeps Field(ge=1) and friends as annotated-types objects with these attributes.
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


class SettingsDocError(RuntimeError):
    """A registered settings class cannot be loaded or documented."""


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    type: str
    default: str
    description: str


def load_settings(entry_points: Iterable[EntryPoint]) -> list[tuple[str, type[BaseSettings]]]:
    """(entry name, class) for each entry point, sorted by name; the same class once.

    Raises SettingsDocError naming the entry point that does not load or is no settings
    class: a reference that silently left a service out would be wrong without saying so.
    """
    found: dict[str, type[BaseSettings]] = {}
    for entry in sorted(entry_points, key=lambda ep: (ep.name, ep.value)):
        try:
            target = entry.load()
        except Exception as exc:  # whatever the import raises, report it with the entry's name
            raise SettingsDocError(
                f"settings entry point {entry.name!r} ({entry.value}) does not load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not (isinstance(target, type) and issubclass(target, BaseSettings)):
            raise SettingsDocError(
                f"settings entry point {entry.name!r} ({entry.value}) is not a BaseSettings class"
            )
        if target in found.values():
            continue  # an editable and a regular install can both list the same class
        if entry.name in found:
            raise SettingsDocError(
                f"settings entry point {entry.name!r} is registered twice "
                f"({found[entry.name].__module__}.{found[entry.name].__qualname__}, {entry.value})"
            )
        found[entry.name] = target
    return list(found.items())


def installed_settings() -> list[tuple[str, type[BaseSettings]]]:
    """The settings classes the installed podpulse distributions register."""
    return load_settings(metadata.entry_points(group=ENTRY_POINT_GROUP))


def render(
    classes: Sequence[tuple[str, type[BaseSettings]]],
    secrets: Iterable[Secret] = KNOWN_SECRETS,
) -> str:
    """The reference as markdown: a table per settings class, then the secrets.

    Raises SettingsDocError when two classes read the same variable: each variable is
    declared once, by one field.
    """
    declared: dict[str, str] = {}
    sections: list[str] = []
    for entry_name, cls in classes:
        where = f"{cls.__module__}.{cls.__qualname__}"
        variables = sorted(_variables(cls), key=lambda v: v.name)
        for variable in variables:
            if variable.name in declared:
                raise SettingsDocError(
                    f"{variable.name} is declared twice: by {declared[variable.name]} and {where}"
                )
            declared[variable.name] = where
        sections.append(_section(entry_name, cls, where, variables))
    secret_rows = [
        f"| `{s.name}` | `{s.file_variable}` | {_cell(s.description)} |"
        for s in sorted(secrets, key=lambda s: s.name)
    ]
    parts = [
        "# Configuration reference",
        f"<!-- Generated from the settings classes registered under the {ENTRY_POINT_GROUP!r} "
        f"entry point; do not edit by hand. Regenerate: {REGENERATE_COMMAND} -->",
        "Every podpulse process is configured through environment variables. podpulse's own "
        "variables carry a prefix per part (`PODPULSE_` for what every process shares, then "
        "`TWIN_`, `TWIN_CALIBRATED_`, `WORKER_`, `PROBER_`, `ALERTER_`, `TAGGER_`); names that "
        "RunPod and OpenTelemetry users already know (`REDIS_URL`, `RUNPOD_*`, `OTEL_*`) keep "
        "their usual spelling. Each variable is read by exactly one setting. A bad value stops "
        "the process at start-up with an error naming the variable, never showing its value.",
        *sections,
        "## Secrets",
        "Secrets are not settings: they are read where they are used, from the variable or, "
        "when that is unset or empty, from the file the `<NAME>_FILE` variable names (a "
        "mounted Docker or Kubernetes secret). A file is read again at most once a second, so "
        "a rotated secret takes effect without a restart. Their values are never logged: the "
        "log redactor replaces them wherever they appear.",
        "| Variable | Or a file named in | Description |\n|---|---|---|\n" + "\n".join(secret_rows),
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Print the reference for the installed distributions to stdout."""
    if argv:
        sys.stderr.write(f"usage: {REGENERATE_COMMAND} (no arguments)\n")
        raise SystemExit(2)
    try:
        text = render(installed_settings())
    except SettingsDocError as exc:
        sys.stderr.write(f"podpulse config-doc: {exc}\n")
        raise SystemExit(1) from None
    sys.stdout.write(text)


def _section(
    entry_name: str, cls: type[BaseSettings], where: str, variables: Sequence[_Variable]
) -> str:
    summary = " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())
    rows = [
        f"| `{v.name}` | {_cell(v.type)} | {_cell(v.default)} | {_cell(v.description)} |"
        for v in variables
    ]
    table = "| Variable | Type | Default | Description |\n|---|---|---|---|\n" + "\n".join(rows)
    head = f"## `{entry_name}`: `{where}`"
    return "\n\n".join(part for part in (head, summary, table) if part)


def _variables(cls: type[BaseSettings]) -> list[_Variable]:
    variables: list[_Variable] = []
    for field_name, field in cls.model_fields.items():
        try:
            name = settings_variable(cls, field_name)
        except TypeError as exc:
            raise SettingsDocError(str(exc)) from None
        if not field.description:
            raise SettingsDocError(f"{cls.__qualname__}.{field_name} ({name}) has no description")
        comma_list = any(isinstance(m, NoDecode) or m is NoDecode for m in field.metadata)
        # A field whose variable has its own format, or whose default depends on the machine
        # (the running interpreter), says how to document it in json_schema_extra.
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        doc_type, doc_default = extra.get("env_type"), extra.get("env_default")
        variables.append(
            _Variable(
                name=name,
                type=str(doc_type)
                if doc_type
                else _type(field.annotation, field, comma_list=comma_list),
                default=f"`{doc_default}`"
                if doc_default
                else _default(field, comma_list=comma_list),
                description=field.description,
            )
        )
    return variables


def _type(annotation: Any, field: FieldInfo | None, *, comma_list: bool) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        text = " or ".join(_type(arg, None, comma_list=comma_list) for arg in members)
    elif origin is Literal:
        text = "one of " + ", ".join(f"`{_plain(value)}`" for value in get_args(annotation))
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        text = "one of " + ", ".join(f"`{member.value}`" for member in annotation)
    elif origin in (tuple, list, set, frozenset):
        item = get_args(annotation)[0] if get_args(annotation) else str
        item_text = _type(item, None, comma_list=False)
        text = f"comma-separated {item_text}s" if comma_list else f"JSON list of {item_text}"
    else:
        text = _SIMPLE_TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if field is not None:
        bounds = [
            f"{symbol} {getattr(m, attr)}"
            for m in field.metadata
            for attr, symbol in _BOUNDS
            if getattr(m, attr, None) is not None
        ]
        if bounds:
            text += ", " + ", ".join(bounds)
    return text


_SIMPLE_TYPES: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
}


def _default(field: FieldInfo, *, comma_list: bool) -> str:
    if field.default_factory_takes_validated_data:
        return "computed from the other settings"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, tuple | list | set | frozenset):
        items = [_plain(item) for item in value]
        return f"`{', '.join(items) if comma_list else json.dumps(items)}`"
    return f"`{_plain(value)}`"


def _plain(value: Any) -> str:
    """A value as a user would write it in the environment, free of machine-specific paths."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    text = str(value)
    if isinstance(value, PurePath | str):
        # A default under the home directory of whoever generated the file says "~" instead.
        home = str(Path.home())
        if text == home or text.startswith(home + "/"):
            text = "~" + text[len(home) :]
    return text


def _cell(text: str) -> str:
    # A table cell is one line, and a bare "|" would end it.
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    main(sys.argv[1:])
