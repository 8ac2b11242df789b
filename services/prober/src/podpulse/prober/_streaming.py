"""Reading an answer as it is made: ``/run`` + ``/stream``, or RunPod's OpenAI route.

What a chat user feels, per request, as vLLM's ``bench serve`` measures it
(``vllm/benchmarks/serve.py``), with podpulse's one change that the clock starts at the
request's *intended* start (coordinated omission, see podpulse.prober._engine):

* TTFT: intended start to the arrival of the first chunk that carries text (an empty chunk, a
  role-only OpenAI delta or the final usage chunk does not count);
* ITL: the gaps between successive text-carrying chunks, one gap per chunk. A chunk that
  carries several tokens (a worker that batched its decode steps, or several chunks that
  arrived in one ``/stream`` answer) is still one gap, as in vLLM: ITL says how often the
  user's screen moves, TPOT how fast the tokens come;
* TPOT: (last text chunk - first text chunk) / (output tokens - 1), vLLM's
  (end-to-end - TTFT) / (output tokens - 1) with end-to-end ending at the last text chunk,
  so the closing usage chunk and the final ``/status`` read are not counted; None for an
  answer of fewer than two tokens.

Chunks of one ``/stream`` answer arrive together and share its arrival time (gaps of 0):
``/stream`` is polled back to back, and the server holds a poll until something is new, so
a chunk is seen within one round trip of its making.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from podpulse.common.runpod import (
    Job,
    JobPolicy,
    RunPodClient,
    RunPodProtocolError,
    StreamResult,
)

__all__ = ["ChunkTimes", "Streamed", "chat_body", "count_of", "read_openai", "read_stream"]

Now = Callable[[], float]
Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass
class ChunkTimes:
    """When the text-carrying chunks of one answer arrived (epoch s) and their tokens."""

    first: float | None = None
    last: float | None = None
    gaps: list[float] = field(default_factory=list)  # seconds
    tokens: int = 0  # what the chunks themselves counted

    def text(self, at: float, tokens: int) -> None:
        """One chunk with text arrived at ``at``."""
        if self.last is not None:
            self.gaps.append(at - self.last)
        else:
            self.first = at
        self.last = at
        self.tokens += tokens

    def ttft_ms(self, intended: float) -> float | None:
        return None if self.first is None else (self.first - intended) * 1000.0

    def tpot_ms(self, output_tokens: int | None) -> float | None:
        if self.first is None or self.last is None or not output_tokens or output_tokens < 2:
            return None
        return (self.last - self.first) * 1000.0 / (output_tokens - 1)

    def itl_ms(self) -> tuple[float, ...]:
        return tuple(gap * 1000.0 for gap in self.gaps)


@dataclass
class Streamed:
    """What a streamed read learnt besides the chunk times."""

    times: ChunkTimes = field(default_factory=ChunkTimes)
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    error: str | None = None  # the answer's own error (an OpenAI error object), if any


def count_of(value: Any) -> int | None:
    """*value* when it is a token count (a non-negative int), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


async def read_stream(
    client: RunPodClient,
    job_input: Any,
    *,
    now: Now,
    call: Call,
    on_job: Callable[[Job], None],
    poll_interval_s: float,
    streamed: Streamed,
    policy: JobPolicy | None = None,
) -> Job:
    """``POST /run`` with ``"stream": true``, ``GET /stream`` until the job is final, then
    ``GET /status`` for delayTime/executionTime and the aggregated output; the final job.

    ``on_job`` hears of the job as soon as it has an id (so it can be cancelled). ``/stream``
    is asked again at once; only an empty answer that came back quicker than
    ``poll_interval_s`` with the status unchanged (a server that does not hold) waits out
    the rest of the interval.
    """
    body = {**job_input, "stream": True} if isinstance(job_input, dict) else job_input
    job: Job = await call(lambda: client.run(body, policy=policy))
    on_job(job)
    status = job.status
    while not status.is_final:
        asked = now()
        answer: StreamResult = await call(lambda: client.stream(job.id))
        arrived = now()
        for chunk in answer.stream:
            _stream_chunk(chunk.output, arrived, streamed)
        if not answer.stream and answer.status == status:
            rest = poll_interval_s - (arrived - asked)
            if rest > 0:
                await asyncio.sleep(rest)
        status = answer.status
    final: Job = await call(lambda: client.status(job.id))
    # Its aggregated output (usage, model) is read by the engine, as for /runsync.
    on_job(final)
    return final


def _stream_chunk(output: Any, at: float, streamed: Streamed) -> None:
    # STREAM.md section 1: {"text": ..., "tokens": n}; the final chunk has no text.
    if not isinstance(output, dict):
        return
    text = output.get("text")
    if isinstance(text, str) and text:
        streamed.times.text(at, count_of(output.get("tokens")) or 0)


def chat_body(job_input: Any, model: str | None) -> dict[str, Any]:
    """The chat-completions request for a prompt's job input: the question as the user's
    message, ``max_new_tokens`` as ``max_tokens``, streamed with the usage chunk."""
    source = job_input if isinstance(job_input, dict) else {}
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": str(source.get("question", ""))}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model:
        body["model"] = model
    if isinstance(source.get("max_new_tokens"), int):
        body["max_tokens"] = source["max_new_tokens"]
    return body


async def read_openai(
    client: RunPodClient, body: dict[str, Any], *, now: Now, streamed: Streamed
) -> bool:
    """Read one streamed chat completion; True when it ended with ``data: [DONE]``."""
    async with client.openai_chat_stream(body) as events:
        async for data in events:
            at = now()
            if data.strip() == "[DONE]":
                return True
            try:
                event = json.loads(data)
            except ValueError:
                raise RunPodProtocolError(
                    f"RunPod openai_chat: an event is not JSON: {data[:80]!r}", call="openai_chat"
                ) from None
            if not isinstance(event, dict):
                continue
            _openai_event(event, at, streamed)
    return False


def _openai_event(event: dict[str, Any], at: float, streamed: Streamed) -> None:
    if isinstance(event.get("error"), dict):
        message = event["error"].get("message")
        streamed.error = str(message) if message else "error event without a message"
        return
    if isinstance(event.get("model"), str):
        streamed.model = event["model"]
    choices = event.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            # The route does not say how many tokens a chunk holds: one, until usage says.
            streamed.times.text(at, 1)
    usage = event.get("usage")
    if isinstance(usage, dict):
        streamed.input_tokens = count_of(usage.get("prompt_tokens"))
        streamed.output_tokens = count_of(usage.get("completion_tokens"))
