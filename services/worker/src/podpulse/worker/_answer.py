"""What a finished job answers: the whole answer's output fields and its span's usage.

Shared by the whole-answer path and the streamed one (whose last chunk carries the same
fields), so both report a job the same way.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span

from ._genai_spans import record_usage
from ._generation import GenerationResult
from ._validation import ValidationResult

__all__ = ["Attempt", "answer_fields", "record_answer", "tokens_per_second"]

# One generation and its verdict; a job with regeneration has several.
Attempt = tuple[GenerationResult, ValidationResult]


def tokens_per_second(result: GenerationResult) -> float:
    """Output tokens over the decode time (0 when it took no measurable time)."""
    seconds = result.generate_ms / 1000.0
    return len(result.token_ids) / seconds if seconds > 0 else 0.0


def answer_fields(
    attempts: list[Attempt], best_index: int, *, input_tokens: int, model: str
) -> dict[str, Any]:
    """The job's output: the returned attempt's text, usage, timings and the verdicts."""
    best, verdict = attempts[best_index]
    validation = verdict.to_dict()
    validation["attempts"] = [
        {"seed": r.seed, "passed": v.passed, "checks": [f.check for f in v.failures]}
        for r, v in attempts
    ]
    validation["returned_attempt"] = best_index
    return {
        "text": best.text,
        "usage": {"input_tokens": input_tokens, "output_tokens": len(best.token_ids)},
        "timings": {
            "generate_ms": round(best.generate_ms, 3),
            "queue_ms": round(best.queue_ms, 3),
            # Queue wait plus prefill: what a streaming client waits for a first word.
            "first_token_ms": round(best.first_token_ms, 3),
            # The same moment on the wall clock (epoch s), for comparing with a client's.
            "first_token_at": round(best.first_token_at, 6),
            "tokens_per_second": round(tokens_per_second(best), 3),
        },
        "validation": validation,
        "model": model,
        "finish_reason": best.finish_reason,
        "seed": best.seed,
        # Most jobs that shared a forward pass with this one (1: it ran alone).
        "batch_size": best.batch_size,
    }


def record_answer(
    span: Span, best: Attempt, *, attempts: int, input_tokens: int, model: str
) -> None:
    """The returned attempt's usage, pace and verdict on the job's span."""
    result, verdict = best
    record_usage(
        span,
        model=model,
        input_tokens=input_tokens,
        output_tokens=len(result.token_ids),
        finish_reason=result.finish_reason,
        tokens_per_second=tokens_per_second(result),
        first_token_ms=result.first_token_ms,
        end_ms=result.queue_ms + result.generate_ms,
        batch_size=result.batch_size,
        attempts=attempts,
        validation_passed=verdict.passed,
    )
