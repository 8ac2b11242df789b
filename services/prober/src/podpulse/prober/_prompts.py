"""Prompt sets: JSONL files of career questions the prober sends, one job input per line.

Each line is ``{"question": str, "profile": {...}?, "max_new_tokens": int?}``, the input the
worker's handler takes. Blank lines are skipped. A default set of career questions ships
inside this package, so it is found from a wheel and from an editable install alike.

``load_prompts`` is the one reader. Each line is decoded and validated on its own, strictly
(no "3" read as 3, no unknown field), by pydantic's JSON parser, which bounds nesting and
refuses lone surrogates; so every bad file gives one ``PromptSetError`` naming its line and
what is wrong there, whatever the bytes, before any request is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

__all__ = ["DEFAULT_PROMPTS", "Prompt", "PromptSetError", "load_prompts"]

DEFAULT_PROMPTS = "career_questions.jsonl"
# Far above any model's output budget, far below what would overflow a JSON reader elsewhere.
_MAX_NEW_TOKENS = 1_000_000
_ERRORS_SHOWN = 3


class PromptSetError(ValueError):
    """A prompt-set file is missing, unreadable or has a bad line; the message says which."""


_Text = Annotated[str, StringConstraints(min_length=1)]


class _Profile(BaseModel):
    # The worker's Profile: free text, skills as a list or one text.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    background: _Text | None = None
    skills: list[_Text] | _Text | None = None
    goals: _Text | None = None
    location: _Text | None = None


class _Line(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    question: Annotated[str, StringConstraints(strip_whitespace=False, pattern=r"\S")]
    profile: _Profile | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=_MAX_NEW_TOKENS)] | None = None


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
        name, data = f"shipped prompt set {DEFAULT_PROMPTS}", source.read_bytes()
    else:
        name = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PromptSetError(f"prompt set {path} does not exist") from None
        except OSError as exc:
            raise PromptSetError(f"prompt set {path} cannot be read: {exc.strerror}") from None
    # A UTF-8 byte-order mark is what some editors start a file with; it is no part of line 1.
    data = data.removeprefix(b"\xef\xbb\xbf")
    prompts = [
        _parse(line, name, number)
        for number, line in enumerate(data.split(b"\n"), start=1)
        if line.strip()
    ]
    if not prompts:
        raise PromptSetError(f"{name} holds no prompts")
    return tuple(prompts)


def _parse(line: bytes, name: str, number: int) -> Prompt:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptSetError(f"{name}, line {number}: not UTF-8 (byte {exc.start + 1})") from None
    try:
        parsed = _Line.model_validate_json(line)
    except ValidationError as exc:
        raise PromptSetError(f"{name}, line {number}: {_problems(exc)}") from None
    profile = None
    if parsed.profile is not None:
        profile = parsed.profile.model_dump(exclude_none=True)
    return Prompt(question=parsed.question, profile=profile, max_new_tokens=parsed.max_new_tokens)


def _problems(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    shown: list[str] = []
    for error in errors:
        # Field names and list positions; a union's branch tags (list[constrained-str]) only
        # say which alternative failed, and the message says that better.
        parts = [str(p) for p in error["loc"] if isinstance(p, int) or str(p).isidentifier()]
        where, kind = ".".join(parts), error["type"]
        if kind == "json_invalid":
            # One line is parsed at a time: its "line 1" would mislead.
            detail = (
                error["msg"].removeprefix("Invalid JSON: ").replace("at line 1 column", "at column")
            )
            shown.append(f"not JSON ({detail})")
        elif kind == "model_type" and not where:
            shown.append("expected a JSON object with a 'question'")
        elif kind in ("string_pattern_mismatch", "string_too_short"):
            shown.append(f"'{where}' must be a non-empty string")
        elif kind == "extra_forbidden":
            shown.append(f"unknown field '{where}'")
        else:
            shown.append(f"'{where}': {error['msg']}" if where else error["msg"])
    unique = list(dict.fromkeys(shown))
    more = len(unique) - _ERRORS_SHOWN
    return "; ".join(unique[:_ERRORS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
