"""A MODULE:FUNC handler for the prober's streaming tests: known delays, STREAM.md chunks.

With ``"stream": true`` in the input it yields ``tokens`` text chunks (one token each), the
first after ``first_ms`` and each next one ``per_token_ms`` later (``per_chunk`` tokens to a
chunk when given, the chunks that much further apart), then the final chunk with
usage; without it, one whole answer after the same total time. The defaults (120 ms, 30 ms,
5 tokens) are test_prober_streaming's constants, for runs whose input is a plain prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Stream (or answer whole) ``tokens`` tokens at the input's pace."""
    job_input = job["input"]
    first = float(job_input.get("first_ms", 120)) / 1000
    pace = float(job_input.get("per_token_ms", 30)) / 1000
    tokens = int(job_input.get("tokens", 5))
    usage = {"input_tokens": 3, "output_tokens": tokens}
    if not job_input.get("stream"):
        await asyncio.sleep(first + pace * (tokens - 1))
        yield {"text": "w " * tokens, "usage": usage, "model": "prober-test"}
        return
    # per_chunk > 1: a worker that batches decode steps into bigger chunks.
    per_chunk = int(job_input.get("per_chunk", 1))
    await asyncio.sleep(first)
    for index in range(0, tokens, per_chunk):
        if index:
            await asyncio.sleep(pace * per_chunk)
        size = min(per_chunk, tokens - index)
        yield {"text": "w " * size, "tokens": size}
    yield {
        "text": "",
        "tokens": 0,
        "finish_reason": "length",
        "usage": usage,
        "timings": {},
        "model": "prober-test",
        "done": True,
    }
