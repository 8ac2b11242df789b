"""The calibrated handlers: stand-ins with known timing, errors and crashes.

They do no inference. ``calibrated`` (:func:`make_handler`) answers whole: execution time is
drawn from a configured distribution (or fixed), a share of jobs fail or kill the worker, and
token counts follow a fixed decode speed, so scaling experiments and tests know exactly what
the platform should report. A job's input may override the draws for one job: ``{"exec_ms":
20, "fail": true, "crash": true, "output_tokens": 64, "refresh": true, "progress": "started"}``
(refresh: ask RunPod to replace the worker after it; progress: send that text as a progress
update when the job starts, so a client polling /status knows the worker really has it).

``calibrated-stream`` (:func:`make_stream_handler`) is an async generator answering token by
token: the first token ``first_token_ms`` after the job starts, each next one ``token_ms``
later (each fixed or drawn), so time to first token and time per output token are known
values a client can recover. It speaks both shapes of issue 21's contract: native jobs
(``"stream": true``: a chunk per token, then the final chunk; otherwise one whole answer) and
RunPod's OpenAI route (``openai_route``/``openai_input``: chat completions streamed as
server-sent events or whole, the model list, and OpenAI's error schema for a bad request). A
job's input (or a chat request's body) may set ``first_token_ms``, ``token_ms``,
``output_tokens``, ``fail`` and ``crash``.
Their settings are :class:`podpulse.twin.settings.CalibratedSettings`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .settings import CalibratedSettings, Distribution

__all__ = [
    "CHAT_ROUTE",
    "CRASH_EXIT_CODE",
    "MODEL",
    "MODELS_ROUTE",
    "make_handler",
    "make_stream_handler",
    "openai_error",
]

# Exit code of a deliberate crash, so logs tell it from a real one.
CRASH_EXIT_CODE = 17


def _draw(median: float, distribution: Distribution, jitter: float, rng: random.Random) -> float:
    match distribution:
        case "fixed":
            return median
        case "uniform":
            return rng.uniform(median * (1 - jitter), median * (1 + jitter))
        case "normal":
            return max(0.0, rng.gauss(median, median * jitter))
        case "lognormal":
            # Parametrised so the median is the configured value: latency tails are right-skewed.
            return rng.lognormvariate(0.0, jitter) * median
    raise AssertionError(distribution)  # pragma: no cover


def _draw_ms(settings: CalibratedSettings, rng: random.Random) -> float:
    return _draw(settings.exec_ms, settings.distribution, settings.jitter, rng)


def _number(job_input: dict[str, Any], key: str) -> float | None:
    value = job_input.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"input.{key} must be a non-negative number")
    return float(value)


def make_handler(settings: CalibratedSettings) -> Callable[[dict[str, Any]], Any]:
    """An async handler drawing from ``settings``; one random stream per process."""
    rng = random.Random(settings.seed)

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        started = time.time()
        job_input = job.get("input")
        if not isinstance(job_input, dict):
            return {"error": "input must be a JSON object"}
        try:
            exec_ms = _number(job_input, "exec_ms")
            tokens = _number(job_input, "output_tokens")
        except ValueError as exc:
            return {"error": str(exc)}
        progress = job_input.get("progress")
        if progress is not None and not isinstance(progress, str):
            return {"error": "progress must be a string"}
        exec_ms = _draw_ms(settings, rng) if exec_ms is None else exec_ms
        if progress is not None:
            # Late: the SDK is already loaded in a worker; importing it here costs nothing there.
            import runpod

            runpod.serverless.progress_update(job, progress)
        crash = job_input.get("crash") is True or rng.random() < settings.crash_rate
        fail = job_input.get("fail") is True or rng.random() < settings.error_rate
        if crash:
            await asyncio.sleep(exec_ms / 2000)
            # A crash mid-job, as an OOM kill or segfault would end it: no result is sent.
            os._exit(CRASH_EXIT_CODE)
        await asyncio.sleep(exec_ms / 1000)
        if fail:
            return {"error": f"calibrated failure after {exec_ms:.0f} ms"}
        output_tokens = int(
            tokens if tokens is not None else exec_ms / 1000 * settings.tokens_per_second
        )
        finished = time.time()
        refresh = {"refresh_worker": True} if job_input.get("refresh") is True else {}
        return {
            **refresh,
            "text": "calibrated " * min(output_tokens, 16),
            "usage": {"input_tokens": len(str(job_input)) // 4, "output_tokens": output_tokens},
            "timings": {
                "handler_ms": (finished - started) * 1000,
                "started_at": started,
                "finished_at": finished,
                "tokens_per_second": settings.tokens_per_second,
            },
            "model": "calibrated",
        }

    return handler


# --- calibrated-stream -------------------------------------------------------------------

# The model name the stand-ins answer as, and the owner its /v1/models entry names.
MODEL = "calibrated"
_OWNER = "podpulse"
# The OpenAI route as a job names it (openai_route); the twin's route builds the jobs.
CHAT_ROUTE = "/v1/chat/completions"
MODELS_ROUTE = "/v1/models"


class _BadInput(ValueError):
    """An input the stream handler refuses; ``param`` names the field, as OpenAI's errors do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _token_text(index: int) -> str:
    # Distinct words, so a relay that drops or reorders a chunk is caught by its text.
    return f"t{index} "


# Bounds on a job's own overrides: an hour per wait, and as many tokens as the settings allow,
# so no request can park a worker's slot for longer (or overflow a sleep).
_MAX_DELAY_MS = 3_600_000
_MAX_TOKENS = 100_000


def _count(source: dict[str, Any], key: str, limit: int | None = None) -> int | None:
    value = source.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadInput(f"{key} must be a positive integer", key)
    if limit is not None and value > limit:
        raise _BadInput(f"{key} must be at most {limit}", key)
    return value


def _delay(source: dict[str, Any], key: str) -> float | None:
    try:
        value = _number(source, key)
    except ValueError:
        value = -1.0
    if value is not None and not 0 <= value <= _MAX_DELAY_MS:
        raise _BadInput(f"{key} must be a number of ms from 0 to {_MAX_DELAY_MS}", key)
    return value


@dataclass
class _Plan:
    """One answer: how many tokens, when the first is due, how each next gap is drawn."""

    tokens: int
    finish_reason: str
    first_token_ms: float
    next_token_ms: Callable[[], float]
    fail: bool
    crash: bool


def _plan(
    settings: CalibratedSettings, rng: random.Random, source: dict[str, Any], cap_key: str
) -> _Plan:
    """The plan for a job whose overrides are in ``source``; ``cap_key`` names its token cap
    (``max_new_tokens`` natively, ``max_tokens`` on the OpenAI route): a cap below the answer's
    length ends it early with finish_reason "length", as a model stopped by it is."""
    first, gap = _delay(source, "first_token_ms"), _delay(source, "token_ms")
    wanted = _count(source, "output_tokens", _MAX_TOKENS) or settings.output_tokens
    cap = _count(source, cap_key)
    if cap_key == "max_tokens" and cap is None:
        cap = _count(source, "max_completion_tokens")  # the newer name of the same bound
    tokens, finish = (cap, "length") if cap is not None and cap < wanted else (wanted, "stop")
    if first is None:
        distribution = settings.first_token_distribution
        first = _draw(settings.first_token_ms, distribution, settings.jitter, rng)

    def next_token_ms() -> float:
        if gap is not None:
            return gap
        return _draw(settings.token_ms, settings.token_distribution, settings.jitter, rng)

    return _Plan(
        tokens=tokens,
        finish_reason=finish,
        first_token_ms=first,
        next_token_ms=next_token_ms,
        fail=source.get("fail") is True or rng.random() < settings.error_rate,
        crash=source.get("crash") is True or rng.random() < settings.crash_rate,
    )


async def _decode(plan: _Plan) -> AsyncIterator[int]:
    """Yield each token's index when it is due. Due times run from the start (the first token
    first_token_ms after it, each next one a drawn gap after the one before), so time the
    caller spends between tokens, posting a chunk, is not added to the pace."""
    clock = asyncio.get_running_loop().time
    due = clock() + plan.first_token_ms / 1000
    for index in range(plan.tokens):
        if plan.crash and index >= plan.tokens // 2:
            # A crash mid-answer, as an OOM kill would end it: no further chunk, no result.
            os._exit(CRASH_EXIT_CODE)
        await asyncio.sleep(max(0.0, due - clock()))
        yield index
        due += plan.next_token_ms() / 1000


def _timings(started: float, first_token: float | None, tokens: int) -> dict[str, float]:
    finished = time.time()
    first_ms = ((first_token or finished) - started) * 1000
    generate_ms = (finished - started) * 1000
    return {
        "queue_ms": 0.0,  # no batcher: a job is decoded the moment the worker takes it
        "first_token_ms": round(first_ms, 3),
        "generate_ms": round(generate_ms, 3),
        # As the model worker counts it: every token over the whole generation.
        "tokens_per_second": round(tokens / generate_ms * 1000, 3) if generate_ms else 0.0,
        "started_at": started,
        "finished_at": finished,
    }


async def _native(
    settings: CalibratedSettings, rng: random.Random, job_input: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """A native job: a chunk per token then the final chunk (``stream: true``), or one whole
    answer shaped like the calibrated handler's (issue 21's contract, section 1)."""
    started = time.time()
    try:
        plan = _plan(settings, rng, job_input, "max_new_tokens")
    except _BadInput as exc:
        yield {"error": f"input.{exc}"}
        return
    stream = job_input.get("stream") is True
    first_token: float | None = None
    async for index in _decode(plan):
        first_token = first_token or time.time()
        if stream:
            yield {"text": _token_text(index), "tokens": 1}
    if plan.fail:
        yield {"error": f"calibrated failure after {plan.tokens} tokens"}
        return
    usage = {"input_tokens": len(str(job_input)) // 4, "output_tokens": plan.tokens}
    whole = {
        "usage": usage,
        "timings": _timings(started, first_token, plan.tokens),
        "validation": {"passed": True, "failures": []},
        "model": MODEL,
        "finish_reason": plan.finish_reason,
    }
    if stream:
        yield {"text": "", "tokens": 0, **whole, "done": True}
    else:
        yield {"text": "".join(_token_text(i) for i in range(plan.tokens)), **whole}


def openai_error(
    message: str,
    param: str | None = None,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error body: its clients raise by status and read ``error.message``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def _read_chat(body: Any) -> tuple[str, int, bool, bool]:
    """A chat completion request as far as the stand-in needs it: model, prompt tokens, stream,
    include_usage; or _BadInput naming the field, as OpenAI's server does."""
    if not isinstance(body, dict):
        raise _BadInput("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadInput("model must be a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadInput("messages must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadInput(f"messages[{index}] must be an object with a role", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _BadInput("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _BadInput("stream_options must be an object", "stream_options")
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4
    return model, max(1, prompt), stream, options.get("include_usage") is True


async def _chat(
    settings: CalibratedSettings, rng: random.Random, job_id: str, body: Any
) -> AsyncIterator[Any]:
    """The OpenAI route's chat completion: SSE strings per token then ``data: [DONE]``
    (``stream: true``), or one ``chat.completion`` object (issue 21's contract, section 2)."""
    try:
        model, prompt_tokens, stream, include_usage = _read_chat(body)
        plan = _plan(settings, rng, body, "max_tokens")
    except _BadInput as exc:
        yield openai_error(str(exc), exc.param)
        return
    head = {"id": f"chatcmpl-{job_id}", "created": int(time.time()), "model": model}
    chunk = {**head, "object": "chat.completion.chunk"}
    async for index in _decode(plan):
        if stream:
            delta = {"role": "assistant", "content": _token_text(index)} if index == 0 else {
                "content": _token_text(index)}  # fmt: skip
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            yield _event({**chunk, "choices": [choice]})
    if plan.fail:
        yield {"error": f"calibrated failure after {plan.tokens} tokens"}
        return
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": plan.tokens,
             "total_tokens": prompt_tokens + plan.tokens}  # fmt: skip
    if not stream:
        text = "".join(_token_text(i) for i in range(plan.tokens))
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": plan.finish_reason}  # fmt: skip
        yield {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return
    # The end in one post: the finish chunk, the usage chunk when asked for, and [DONE].
    finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": plan.finish_reason}
    end = _event({**chunk, "choices": [finish]})
    if include_usage:
        end += _event({**chunk, "choices": [], "usage": usage})
    yield end + "data: [DONE]\n\n"


def _models() -> dict[str, Any]:
    entry = {"id": MODEL, "object": "model", "created": 0, "owned_by": _OWNER}
    return {"object": "list", "data": [entry]}


def make_stream_handler(
    settings: CalibratedSettings,
) -> Callable[[dict[str, Any]], AsyncIterator[Any]]:
    """An async generator handler (``calibrated-stream``): native jobs and RunPod's
    OpenAI route, tokens paced by first_token_ms and token_ms; one random stream per process.

    A job's input (or a chat request's body) may set ``first_token_ms``, ``token_ms``,
    ``output_tokens``, ``fail`` and ``crash`` for that job."""
    rng = random.Random(settings.seed)

    async def stream_handler(job: dict[str, Any]) -> AsyncIterator[Any]:
        job_input = job.get("input")
        if not isinstance(job_input, dict):
            yield {"error": "input must be a JSON object"}
            return
        route = job_input.get("openai_route")
        if route is None:
            async for output in _native(settings, rng, job_input):
                yield output
        elif route == CHAT_ROUTE:
            async for output in _chat(settings, rng, str(job["id"]), job_input.get("openai_input")):
                yield output
        elif route == MODELS_ROUTE:
            yield _models()
        else:
            yield openai_error(f"unknown route {str(route)[:100]!r}", "openai_route")

    return stream_handler
