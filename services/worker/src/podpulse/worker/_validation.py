"""Objective checks on a generated answer, with thresholds the operator sets.

The checks are deliberately mechanical (length, repetition, leaks, truncation): the user's
earlier rubric-style validator rejected good answers, and a reported failure costs nothing
while a wrongly withheld answer costs a customer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Failure", "ValidationResult", "ValidationThresholds", "validate_answer"]

_WORD = re.compile(r"[\w']+", re.UNICODE)
# Closing quotes and brackets may follow the final stop; so may a Markdown emphasis mark.
_SENTENCE_END = tuple('.!?…:;"\u201d\u2019)]*`')
# Below this many words a source text is too short for a verbatim window to mean a leak.
_MIN_LEAK_SOURCE_WORDS = 4


@dataclass(frozen=True, slots=True)
class ValidationThresholds:
    """Limits an answer must respect; see the worker settings for their environment names."""

    min_words: int = 3
    max_words: int = 800
    ngram: int = 3
    max_repeat_ratio: float = 0.5
    leak_words: int = 8


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check: which, why, and the measured value against its threshold."""

    check: str
    message: str
    value: float | int | None = None
    threshold: float | int | None = None


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Whether an answer passed, and every check it failed."""

    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape returned in the job output."""
        failures = [
            {"check": f.check, "message": f.message, "value": f.value, "threshold": f.threshold}
            for f in self.failures
        ]
        return {"passed": self.passed, "failures": failures}


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def repeated_ngram_ratio(words: list[str], n: int) -> float:
    """Share of word n-grams that repeat an earlier one (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _shares_window(answer: list[str], source: list[str], size: int) -> bool:
    if len(source) < _MIN_LEAK_SOURCE_WORDS:
        return False
    size = min(size, len(source))
    if len(answer) < size:
        return False
    answer_grams = {tuple(answer[i : i + size]) for i in range(len(answer) - size + 1)}
    return any(tuple(source[i : i + size]) in answer_grams for i in range(len(source) - size + 1))


def validate_answer(
    text: str,
    *,
    finish_reason: str,
    thresholds: ValidationThresholds,
    system_prompt: str = "",
    user_text: str = "",
) -> ValidationResult:
    """Run every check on ``text`` and return all failures (never raises on odd text)."""
    failures: list[Failure] = []
    words = _words(text)
    if not text.strip():
        failures.append(Failure("empty", "the answer is empty"))
        return ValidationResult(failures)
    if len(words) < thresholds.min_words:
        failures.append(
            Failure("too_short", "fewer words than min_words", len(words), thresholds.min_words)
        )
    if len(words) > thresholds.max_words:
        failures.append(
            Failure("too_long", "more words than max_words", len(words), thresholds.max_words)
        )
    ratio = repeated_ngram_ratio(words, thresholds.ngram)
    if ratio > thresholds.max_repeat_ratio:
        failures.append(
            Failure(
                "repetition",
                f"share of repeated {thresholds.ngram}-grams above max_repeat_ratio",
                round(ratio, 4),
                thresholds.max_repeat_ratio,
            )
        )
    if system_prompt and _shares_window(words, _words(system_prompt), thresholds.leak_words):
        failures.append(
            Failure(
                "system_prompt_leak",
                "the answer repeats the system prompt verbatim",
                threshold=thresholds.leak_words,
            )
        )
    if user_text and _shares_window(words, _words(user_text), thresholds.leak_words):
        failures.append(
            Failure(
                "prompt_echo",
                "the answer echoes the user's message verbatim",
                threshold=thresholds.leak_words,
            )
        )
    if finish_reason == "length" and not text.rstrip().endswith(_SENTENCE_END):
        failures.append(Failure("cut_off", "stopped at max_new_tokens in the middle of a sentence"))
    return ValidationResult(failures)
