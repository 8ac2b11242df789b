"""What installing podpulse-twin brings, read from the installed distributions' metadata."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEAVY = {"torch", "transformers", "tokenizers", "safetensors", "podpulse-worker"}


def _runtime_closure(name: str) -> set[str]:
    """Every distribution installing ``name`` installs, by canonical name: with the extras each
    requirement asks for (podpulse-common[runpod-worker]), and no others."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(name), frozenset())]
    while todo:
        current, extras = todo.pop()
        if (current, extras) in seen:
            continue
        seen.add((current, extras))
        for line in metadata.requires(current) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in {"", *extras}
            ):
                continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {distribution for distribution, _ in seen}


def test_installing_the_twin_never_installs_torch_or_the_model_worker() -> None:
    """podpulse-twin's whole runtime closure holds no torch, transformers or podpulse-worker."""
    closure = _runtime_closure("podpulse-twin")
    assert {"podpulse-common", "runpod", "starlette", "uvicorn"} <= closure
    assert not closure & HEAVY


def test_the_model_worker_does_not_depend_on_the_twin() -> None:
    """podpulse-worker's runtime requirements name neither the twin nor starlette/uvicorn."""
    direct = {
        canonicalize_name(Requirement(r).name) for r in metadata.requires("podpulse-worker") or []
    }
    assert not direct & {"podpulse-twin", "starlette", "uvicorn"}
