"""Prompt sets: JSONL files of career questions the prober sends, one job input per line.

Each line is ``{"question": str, "profile": {...}?, "max_new_tokens": int?}``, the input the
worker's handler takes. Blank lines are skipped. A default set of career questions ships
inside this package, so it is found from a wheel and from an editable install alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PROMPTS", "Prompt", "PromptSetError", "load_prompts"]

DEFAULT_PROMPTS = "career_questions.jsonl"
_PROFILE_KEYS = frozenset({"background", "skills", "goals", "location"})


class PromptSetError(ValueError):
    """A prompt-set file is missing, unreadable or has a bad line; the message says which."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One question, with the optional profile of the person asking."""

    question: str
    profile: dict[str, Any] | None = None
    max_new_tokens: int | None = None

    def to_input(self) -> dict[str, Any]:
        """The job ``input`` for this prompt."""
        body: dict[str, Any] = {"question": self.question}
        if self.profile:
            body["profile"] = dict(self.profile)
        if self.max_new_tokens is not None:
            body["max_new_tokens"] = self.max_new_tokens
        return body


def load_prompts(path: Path | None = None) -> tuple[Prompt, ...]:
    """The prompts in ``path``, or the shipped career questions when ``path`` is None."""
    if path is None:
        source = resources.files("podpulse.prober").joinpath("prompts", DEFAULT_PROMPTS)
        name, text = f"shipped prompt set {DEFAULT_PROMPTS}", source.read_text(encoding="utf-8")
    else:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PromptSetError(f"prompt set {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptSetError(f"prompt set {path} cannot be read: {exc}") from None
    prompts = [
        _parse(line, name, number)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not prompts:
        raise PromptSetError(f"{name} holds no prompts")
    return tuple(prompts)


def _parse(line: str, name: str, number: int) -> Prompt:
    def bad(why: str) -> PromptSetError:
        return PromptSetError(f"{name}, line {number}: {why}")

    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise bad("expected a JSON object with a 'question'")
    unknown = sorted(set(data) - {"question", "profile", "max_new_tokens"})
    if unknown:
        raise bad(f"unknown field(s) {', '.join(unknown)}")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("'question' must be a non-empty string")
    profile = data.get("profile")
    if profile is not None:
        if not isinstance(profile, dict):
            raise bad("'profile' must be an object")
        extra = sorted(set(profile) - _PROFILE_KEYS)
        if extra:
            raise bad(f"unknown profile field(s) {', '.join(extra)}")
    tokens = data.get("max_new_tokens")
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1
    ):
        raise bad("'max_new_tokens' must be a positive integer")
    return Prompt(question=question, profile=profile, max_new_tokens=tokens)
