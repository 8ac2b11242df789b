"""Annotation templates: ``{{ value }}``, ``{{ threshold }}``, ``{{ endpoint }}``,
``{{ labels.NAME }}`` substituted, nothing else.

Deliberately not Jinja: an annotation comes from a user's file and is rendered on every
evaluation, so it can neither run code nor loop. Unknown names are errors when the file is
read, never a blank in a 3 a.m. message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator

__all__ = ["Template", "TemplateText"]

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_SCALARS = frozenset({"value", "threshold", "endpoint"})
_LABEL = re.compile(r"^labels\.([A-Za-z_][A-Za-z0-9_]*)$")


class TemplateText:
    """A checked template; :meth:`render` fills it in."""

    __slots__ = ("_labels", "text")

    def __init__(self, text: str) -> None:
        labels: set[str] = set()
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1)
            label = _LABEL.match(name)
            if label is not None:
                labels.add(label.group(1))
            elif name not in _SCALARS:
                raise ValueError(
                    f"unknown template name {{{{ {name} }}}}: use value, threshold, "
                    "endpoint or labels.NAME"
                )
        rest = _PLACEHOLDER.sub("", text)
        if "{{" in rest or "}}" in rest:
            raise ValueError("unbalanced '{{' or '}}' in template")
        self.text = text
        self._labels = frozenset(labels)

    def label_names(self) -> frozenset[str]:
        """The labels ``{{ labels.NAME }}`` refers to."""
        return self._labels

    def render(self, *, value: float | None, threshold: float, labels: Mapping[str, str]) -> str:
        """The text with every placeholder replaced (a missing label renders empty)."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "value":
                return _number(value)
            if name == "threshold":
                return _number(threshold)
            if name == "endpoint":
                return labels.get("endpoint", "")
            label = _LABEL.match(name)
            assert label is not None  # checked in __init__
            return labels.get(label.group(1), "")

        return _PLACEHOLDER.sub(fill, self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TemplateText) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"TemplateText({self.text!r})"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.6g}"


def _template(value: object) -> TemplateText:
    if isinstance(value, TemplateText):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")  # noqa: TRY004
    return TemplateText(value)


Template = Annotated[
    TemplateText, PlainValidator(_template), PlainSerializer(lambda t: t.text, return_type=str)
]
