"""Whether third-party code that podpulse subclasses or works around is still what was verified.

A table maps ``module:qualname`` to the first 16 hex digits of the sha256 of its source, as
read by :func:`inspect.getsource` on the verified version; a test per table fails when the
installed code differs, so an upgrade of the dependency gets a look before the pin moves.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

__all__ = ["drift", "source_digest"]


def source_digest(target: str) -> str:
    """The digest of the source of *target* (``module:qualname``) as installed."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def drift(verified: Mapping[str, str]) -> list[str]:
    """The targets in *verified* whose installed source differs from their digest (or is gone)."""
    changed = []
    for target, digest in verified.items():
        try:
            actual = source_digest(target)
        except (ImportError, AttributeError, OSError, TypeError):
            actual = "missing"
        if actual != digest:
            changed.append(target)
    return changed
