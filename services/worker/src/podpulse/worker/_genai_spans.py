"""OpenTelemetry GenAI-convention spans for one generation; never any prompt or answer text.

Attribute names follow the OpenTelemetry semantic conventions for generative AI
(``gen_ai.*``); the content attributes (``gen_ai.input.messages`` and friends) are opt-in
there and never set here, because career questions carry personal details.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

__all__ = ["generation_span", "record_usage"]

_OPERATION = "chat"
_DEFAULT_TRACER = trace.get_tracer("podpulse.worker")


@contextmanager
def generation_span(
    tracer: Tracer | None,
    *,
    model: str,
    job_id: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    activate: bool = True,
) -> Iterator[Span]:
    """A ``chat {model}`` span around a job's generation; exceptions mark it ERROR.

    ``activate=False`` leaves it out of the current context: a streamed job's generator
    yields inside it, and the consumer that runs in between must not find it current.
    """
    # A ProxyTracer when no provider is installed yet: it follows the one installed later.
    tracer = tracer or _DEFAULT_TRACER
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": _OPERATION,
        "gen_ai.provider.name": "podpulse.worker",
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.temperature": temperature,
        "gen_ai.request.top_p": top_p,
    }
    if seed is not None:
        attributes["gen_ai.request.seed"] = seed
    if job_id:
        attributes["runpod.job.id"] = job_id
    # INTERNAL: the model runs in this process; there is no remote inference service to call.
    span = tracer.start_span(f"{_OPERATION} {model}", kind=SpanKind.INTERNAL, attributes=attributes)
    try:
        if activate:
            # record_exception off: an exception's message may quote the input.
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                yield span
        else:
            yield span
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()


def record_usage(
    span: Span,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    finish_reason: str,
    tokens_per_second: float,
    first_token_ms: float,
    end_ms: float,
    batch_size: int,
    attempts: int,
    validation_passed: bool,
) -> None:
    """Usage and outcome attributes once the answer is known.

    ``first_token_ms`` and ``end_ms`` count from the job's submission. The pace follows the
    GenAI server metrics (seconds): time to first token, and time per output token after the
    first, (end - first token) / (output tokens - 1), as vLLM's benchmark defines TPOT; a job
    of fewer than two tokens has no pace.
    """
    span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    span.set_attribute("podpulse.tokens_per_second", round(tokens_per_second, 3))
    span.set_attribute("podpulse.first_token_ms", round(first_token_ms, 3))
    span.set_attribute("gen_ai.server.time_to_first_token", first_token_ms / 1000.0)
    if output_tokens > 1:
        per_token_s = (end_ms - first_token_ms) / 1000.0 / (output_tokens - 1)
        span.set_attribute("gen_ai.server.time_per_output_token", per_token_s)
    span.set_attribute("podpulse.batch_size", batch_size)
    span.set_attribute("podpulse.attempts", attempts)
    span.set_attribute("podpulse.validation.passed", validation_passed)
