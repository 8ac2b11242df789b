"""Reading a rules file: YAML to the :class:`RulesConfig` model, each error with its line.

The text is composed to YAML nodes first, so every value keeps where it stood; a pydantic
error's location (``rules.0.stat``) is walked back down the nodes to the value's (or, for a
missing key, its mapping's) start mark. The shipped defaults are a YAML file beside this
module, read by the same reader.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ._model import RulesConfig

__all__ = [
    "DEFAULT_RULES_RESOURCE",
    "RulesError",
    "default_rules",
    "default_rules_text",
    "format_duration",
    "load_rules",
    "parse_rules",
    "render_rules",
]

DEFAULT_RULES_RESOURCE = "default_rules.yaml"
# YAML aliases make a graph of the nodes, not a tree: `a: &a [*a]` contains itself, and nine
# levels of ten aliases expand to 10^9 values from a few lines. The expansion is measured
# on the graph (each node once) before anything walks or builds it. A rules file of a
# thousand rules is some twenty thousand values and a few levels deep.
_MAX_VALUES = 100_000
_MAX_DEPTH = 64


class RulesError(ValueError):
    """A rules file is unreadable or invalid; each line of the message names file:line: key."""


def default_rules_text() -> str:
    """The shipped defaults, as YAML text (what ``podpulse alerts rules`` prints)."""
    return resources.files(__package__).joinpath(DEFAULT_RULES_RESOURCE).read_text("utf-8")


def default_rules(*, max_window_s: float | None = None) -> RulesConfig:
    """The shipped rules with their route and inhibition."""
    return parse_rules(
        default_rules_text(), source=f"<{DEFAULT_RULES_RESOURCE}>", max_window_s=max_window_s
    )


def load_rules(path: Path, *, max_window_s: float | None = None) -> RulesConfig:
    """Read and validate the user's rules file at *path*."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file ({exc})") from None
    return parse_rules(text, source=str(path), max_window_s=max_window_s)


def parse_rules(
    text: str, *, source: str = "<rules>", max_window_s: float | None = None
) -> RulesConfig:
    """Validate rules YAML *text*; RulesError lists every problem as ``source:line: key: why``.

    *max_window_s* (the alerter's ``ALERTER_RETENTION_S``) refuses a rule whose window is
    longer than the windows kept: it would silently cover only the retention.
    """
    try:
        _refuse_deep_nesting(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError(f"{source}{line}: not valid YAML: {problem}") from None
    if node is None:
        raise RulesError(f"{source}: empty rules file")
    _refuse_alias_bombs(node, source)
    _refuse_duplicate_keys(node, source)
    # construct_document builds plain dicts/lists from the very nodes the marks come from.
    data = yaml.SafeLoader("").construct_document(node)
    try:
        return RulesConfig.model_validate(data, context={"max_window_s": max_window_s})
    except ValidationError as exc:
        lines = [_describe(error, node, source) for error in exc.errors(include_url=False)]
        raise RulesError("\n".join(lines)) from None


def _describe(error: ErrorDetails, root: yaml.Node, source: str) -> str:
    node, key, where = _locate(root, error["loc"])
    if error["type"] == "missing":
        where = list(error["loc"])  # the key that is not there; its mapping's line
    path = ".".join(str(part) for part in where) or "<file>"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        node = key or node  # the key itself is the mistake
    return f"{source}:{node.start_mark.line + 1}: {path}: {message}"


def _locate(
    root: yaml.Node, loc: tuple[int | str, ...]
) -> tuple[yaml.Node, yaml.Node | None, list[int | str]]:
    """The deepest node *loc* reaches, its key node, and the key path as the file spells it.

    pydantic appends validator names to a union's or a model validator's loc; those parts
    match no key, so the walk stops at the last node that exists (a missing key's mapping).
    """
    node, key = root, None
    where: list[int | str] = []
    for part in loc:
        found = _child(node, part)
        if found is None:
            break
        key, node = found
        where.append(part)
    return node, key, where


def _child(node: yaml.Node, part: int | str) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        return (None, node.value[part]) if 0 <= part < len(node.value) else None
    return None


def _refuse_deep_nesting(text: str, source: str) -> None:
    # PyYAML's parser is a state machine but its composer recurses: deep nesting is refused
    # from the event stream, before composing it could exhaust the stack.
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                mark = event.start_mark
                line = "" if mark is None else f":{mark.line + 1}"
                raise RulesError(f"{source}{line}: nested more than {_MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _refuse_alias_bombs(root: yaml.Node, source: str) -> None:
    """RulesError, with the line, for a value that contains itself, or expands past
    ``_MAX_VALUES`` values or ``_MAX_DEPTH`` levels; linear in the nodes written."""
    # id(node): (values it expands to, levels it expands to), for nodes walked; measured on
    # the expansion, since an alias can stack one deep value inside another.
    expanded: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()  # the nodes on the path from the root: an alias back is a loop
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        line = node.start_mark.line + 1
        if leaving:
            open_.discard(id(node))
            sizes = [expanded[id(child)] for child in _children(node)]
            total = 1 + sum(size for size, _ in sizes)
            depth = 1 + max((levels for _, levels in sizes), default=0)
            if total > _MAX_VALUES:
                raise RulesError(
                    f"{source}:{line}: expands to more than {_MAX_VALUES} values (YAML aliases)"
                )
            if depth > _MAX_DEPTH:
                raise RulesError(f"{source}:{line}: nested more than {_MAX_DEPTH} levels deep")
            expanded[id(node)] = (total, depth)
            continue
        if id(node) in expanded:
            continue
        if id(node) in open_:
            raise RulesError(f"{source}:{line}: a YAML alias makes this value contain itself")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _refuse_duplicate_keys(node: yaml.Node, source: str) -> None:
    # YAML lets the last of two equal keys win silently; in a rules file that hides a rule.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    line = key.start_mark.line + 1
                    raise RulesError(f"{source}:{line}: {key.value}: duplicate key")
                seen.add(key.value)
            _refuse_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, source)


def render_rules(config: RulesConfig) -> str:
    """*config* as a rules file that :func:`parse_rules` reads back to the same config."""
    data = config.model_dump(mode="json", by_alias=True)
    data["evaluation_interval"] = format_duration(config.evaluation_interval)
    for key in ("group_wait", "group_interval", "repeat_interval"):
        data["route"][key] = format_duration(getattr(config.route, key))
    for rule, dumped in zip(config.rules, data["rules"], strict=True):
        dumped["window"] = format_duration(rule.window)
        dumped["for"] = format_duration(rule.for_)
        dumped["keep_firing_for"] = format_duration(rule.keep_firing_for)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def format_duration(seconds: float) -> str:
    """A Prometheus duration for *seconds* (``90`` -> ``1m30s``, ``0.5`` -> ``500ms``)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):  # fmt: skip
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
