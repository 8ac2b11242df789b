"""Streamed jobs and RunPod's OpenAI route, through the handler's async generator, in process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from podpulse.common.testing import wait_until
from podpulse.worker.handler import ModelHandler, build_handler
from podpulse.worker.settings import WorkerSettings

QUESTION = "How do I become a data analyst?"
TIMINGS = {"queue_ms", "first_token_ms", "first_token_at", "generate_ms", "tokens_per_second"}


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def handler(loaded, spans) -> Iterator[ModelHandler]:
    """One handler for the module: jobs here are short, and the batcher is shared as in a worker."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = WorkerSettings(max_concurrency=4, batch_wait_ms=20, max_new_tokens=64)
    made = build_handler(settings, loaded, model_name="tiny", tracer=provider.get_tracer("t"))
    yield made
    made.generator.close()


@pytest.fixture(autouse=True)
def _no_hook(handler: ModelHandler) -> Iterator[None]:
    yield
    handler.generator.step_hook = None


def job(job_id: str = "job-s", **payload: Any) -> dict[str, Any]:
    return {"id": job_id, "input": payload}


async def outputs(handler: ModelHandler, the_job: dict[str, Any]) -> list[Any]:
    return [out async for out in handler.handle(the_job)]


def openai(route: str, body: object = None) -> dict[str, Any]:
    return job("job-o", openai_route=route, openai_input=body)


def events(strings: list[str]) -> list[Any]:
    """The data of every server-sent event in ``strings``; [DONE] as the string itself."""
    found: list[Any] = []
    for string in strings:
        assert string.endswith("\n\n")
        for event in string.split("\n\n")[:-1]:
            assert event.startswith("data: ")
            data = event.removeprefix("data: ")
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


async def test_chunks_go_out_while_the_job_is_still_decoding(handler) -> None:
    """The first chunk reaches the consumer before the batcher's fourth step: the generation
    thread waits at its fourth step until the consumer has it, so nothing is held to the end."""
    first_seen = threading.Event()
    waited: list[bool] = []

    def hook(_rows: int) -> None:
        if handler.generator.stats.forward_calls - start == 4:
            waited.append(first_seen.wait(30))

    start = handler.generator.stats.forward_calls
    handler.generator.step_hook = hook
    chunks = []
    async for chunk in handler.handle(job(question=QUESTION, max_new_tokens=12, temperature=0.9,
                                          seed=5, stream=True)):  # fmt: skip
        chunks.append(chunk)
        first_seen.set()
    assert waited == [True]
    assert chunks[-1]["done"] is True
    assert len(chunks) >= 3  # a chunk per step with text, then the final one


@pytest.mark.parametrize("stop", [False, True])
async def test_streamed_text_and_tokens_add_up_to_the_whole_answer(handler, stop) -> None:
    """Same seed: the chunks' text joins into the non-streamed answer (stop string cut, never
    sent) and their token counts sum to its output tokens; the final chunk has the rest."""
    payload: dict[str, Any] = {"question": QUESTION, "max_new_tokens": 24, "temperature": 1.0,
                               "seed": 21}  # fmt: skip
    if stop:
        full = (await handler.answer(job(**payload)))["text"]
        payload["stop"] = full[len(full) // 2 : len(full) // 2 + 3]
    (whole,) = await outputs(handler, job(**payload))
    chunks = await outputs(handler, job(**payload, stream=True))
    *steps, final = chunks
    assert "".join(c["text"] for c in steps) == whole["text"]
    assert sum(c["tokens"] for c in steps) == whole["usage"]["output_tokens"]
    assert all(set(c) == {"text", "tokens"} and c["tokens"] >= 0 for c in steps)
    assert (final["text"], final["tokens"], final["done"]) == ("", 0, True)
    assert final["usage"] == whole["usage"]
    assert final["finish_reason"] == whole["finish_reason"]
    assert set(final["timings"]) == TIMINGS
    assert final["validation"]["passed"] is (final["validation"]["failures"] == [])
    assert final["validation"]["regeneration"].startswith("none")
    assert set(final) - {"tokens", "done"} == set(whole)
    if stop:
        assert whole["finish_reason"] == "stop"
        assert payload["stop"] not in "".join(c["text"] for c in steps)


async def test_multibyte_text_streams_whole_characters(handler, loaded) -> None:
    """A character split over several tokens goes out once complete, never as U+FFFD halves."""
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode("日本語の説明です", add_special_tokens=False)
    from podpulse.worker._text_stream import TextStream

    stream = TextStream(tokenizer)
    pieces = [p for i in ids if (p := stream.push([i])) is not None]
    rest = stream.finish(tokenizer.decode(ids))
    texts = [p.text for p in pieces] + ([rest.text] if rest else [])
    assert "".join(texts) == "日本語の説明です"
    assert not any("\ufffd" in text for text in texts)
    assert sum(p.tokens for p in pieces) + (rest.tokens if rest else 0) == len(ids)


async def test_a_job_without_stream_yields_exactly_its_whole_answer(handler) -> None:
    """No stream flag: one output, the whole answer with every field it always had."""
    payload: dict[str, Any] = {"question": QUESTION, "max_new_tokens": 6, "seed": 3}
    (out,) = await outputs(handler, job(**payload))
    assert set(out) == {"text", "usage", "timings", "validation", "model", "finish_reason",
                        "seed", "batch_size"}  # fmt: skip
    assert out == {**await handler.answer(job(**payload)), "timings": out["timings"]}
    assert await outputs(handler, job(question="hi", temperature=7, stream=True)) == [
        {"error": "invalid input: input.temperature: Input should be less than or equal to 2"}
    ]


def hold_after(handler: ModelHandler, passes: int) -> threading.Event:
    """Hold the generation thread at its ``passes``-th pass from now until the event is set,
    so that a job cannot run on while the test stops it."""
    gen = handler.generator
    go = threading.Event()
    start = gen.stats.forward_calls

    def hook(_rows: int) -> None:
        if gen.stats.forward_calls - start >= passes:
            go.wait(30)

    gen.step_hook = hook
    return go


async def test_a_consumer_that_stops_frees_the_batch_slot_at_once(handler) -> None:
    """Closing a stream after its first chunk drops the row at the next step; the next job
    does not wait for the closed one's max_new_tokens."""
    gen = handler.generator
    calls = gen.stats.forward_calls
    go = hold_after(handler, 8)
    stream = handler.handle(job(question=QUESTION, max_new_tokens=64, temperature=0.9, seed=1,
                                stream=True))  # fmt: skip
    first = await anext(stream)
    assert first["tokens"] >= 1
    await stream.aclose()
    go.set()
    (after,) = await outputs(handler, job(question="hi", max_new_tokens=2))
    assert "error" not in after
    # At most 8 passes and the one it was dropped in, then the next job's 2; not 64.
    assert gen.stats.forward_calls - calls <= 8 + 1 + 2
    wait_until(lambda: gen.active == 0, 30, "the batch to empty")


async def test_a_cancelled_streamed_job_frees_its_slot(handler) -> None:
    """The SDK cancels the handler's task on job-stop: the row leaves at the next step."""
    gen = handler.generator
    calls = gen.stats.forward_calls
    go = hold_after(handler, 8)
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in handler.handle(job(question=QUESTION, max_new_tokens=64, temperature=0.9,
                                          seed=2, stream=True)):  # fmt: skip
            got_one.set()

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    go.set()
    wait_until(lambda: gen.active == 0, 30, "the cancelled job's row to leave the batch")
    assert gen.stats.forward_calls - calls <= 8 + 1
    assert gen.expected == 0


async def test_a_fault_mid_stream_fails_the_job_and_asks_for_a_new_worker(
    handler, loaded, monkeypatch
) -> None:
    """A CUDA OOM while streaming yields the error last and sets the SDK config's
    refresh_worker (the SDK reads no refresh_worker from a generator's output)."""
    handler.platform_config = {}
    real = loaded.model.forward
    calls = {"n": 0}

    def oom_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", oom_on_third)
    try:
        chunks = await outputs(handler, job(question="hi", max_new_tokens=20, stream=True))
    finally:
        monkeypatch.setattr(loaded.model, "forward", real)
        config, handler.platform_config = handler.platform_config, None
    assert chunks[-1]["error"] == "CUDA out of memory; the worker will restart"
    assert all("done" not in c for c in chunks)
    assert config == {"refresh_worker": True}


async def test_a_stalled_step_fails_a_streamed_job_while_the_step_still_hangs(handler) -> None:
    """A step stuck past the stall limit: the streamed job gets the stall error (and the SDK
    config's refresh_worker) while the step hangs, not when it returns."""
    gen, handler.platform_config = handler.generator, {}
    release = threading.Event()
    limit, gen.stall_s = gen.stall_s, 0.3
    start = gen.stats.forward_calls
    gen.step_hook = lambda _rows: release.wait(60) if gen.stats.forward_calls - start > 2 else None
    try:
        chunks = await outputs(handler, job(question="hi", max_new_tokens=20, stream=True))
        assert gen.stalled_for() > 0.3  # answered by the stall check: the step still hangs
    finally:
        release.set()
        gen.step_hook = None
        config, handler.platform_config = handler.platform_config, None
    assert chunks[-1]["error"].startswith("generation stalled: one generation step has run")
    assert config == {"refresh_worker": True}
    wait_until(lambda: gen.stalled_for() == 0.0, 30, "the hung step to end")
    gen.stall_s = limit


async def test_every_job_span_carries_time_to_first_token_and_per_output_token(
    handler, spans
) -> None:
    """Streamed or not, the job's span has the GenAI server pace attributes, in seconds."""
    spans.clear()
    (whole,) = await outputs(handler, job("w", question="hi", max_new_tokens=8, temperature=0.9,
                                          seed=4))  # fmt: skip
    *_, final = await outputs(handler, job("s", question="hi", max_new_tokens=8,
                                           temperature=0.9, seed=4, stream=True))  # fmt: skip
    by_job = {s.attributes["runpod.job.id"]: dict(s.attributes) for s in spans.get_finished_spans()}
    for job_id, out in (("w", whole), ("s", final)):
        attrs = by_job[job_id]
        ttft = attrs["gen_ai.server.time_to_first_token"]
        assert ttft == pytest.approx(out["timings"]["first_token_ms"] / 1000, abs=1e-5)
        end_s = (out["timings"]["queue_ms"] + out["timings"]["generate_ms"]) / 1000
        tokens = out["usage"]["output_tokens"]
        assert tokens > 1
        tpot = attrs["gen_ai.server.time_per_output_token"]
        assert tpot == pytest.approx((end_s - ttft) / (tokens - 1), rel=1e-2, abs=1e-5)
        assert tpot > 0


async def test_first_token_at_is_the_wall_clock_moment_before_the_first_chunk(handler) -> None:
    """timings.first_token_at (epoch s) lies within the job's wall-clock span, and no text
    reaches the consumer before it: a client on the same machine can set its first chunk
    beside the worker's first token."""
    before = time.time()
    arrivals: list[float] = []
    chunks: list[Any] = []
    async for out in handler.handle(job("t", question=QUESTION, max_new_tokens=8,
                                        temperature=0.9, seed=5, stream=True)):  # fmt: skip
        arrivals.append(time.time())
        chunks.append(out)
    after = time.time()
    final = chunks[-1]
    first_at = final["timings"]["first_token_at"]
    assert before <= first_at <= after
    first_text = next(at for at, c in zip(arrivals, chunks, strict=True) if c.get("text"))
    assert first_at <= first_text
    # The same moment as first_token_ms, counted from the job's arrival at the batcher.
    arrived_at = first_at - final["timings"]["first_token_ms"] / 1000
    assert before <= arrived_at <= first_at


# -- RunPod's OpenAI route --------------------------------------------------------------------

# A developer message and content parts: both are read into the worker's plain messages.
CHAT = {"messages": [{"role": "developer", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Which jobs?"}]}],
        "model": "whatever", "max_tokens": 10, "temperature": 0.8, "seed": 9}  # fmt: skip


async def test_openai_chat_streams_events_that_add_up_to_the_completion(handler) -> None:
    """stream: SSE strings, a content delta per step, finish, the usage chunk, [DONE]; their
    text is the non-streamed completion's for the same seed."""
    (completion,) = await outputs(handler, openai("/v1/chat/completions", CHAT))
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "tiny"
    (choice,) = completion["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in {"stop", "length"}
    usage = completion["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    strings = await outputs(handler, openai("/v1/chat/completions", body))
    assert all(isinstance(s, str) for s in strings)
    *chunks, usage_chunk, done = events(strings)
    assert done == "[DONE]"
    assert strings[-1].endswith("data: [DONE]\n\n")
    assert (usage_chunk["choices"], usage_chunk["usage"]) == ([], usage)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in [*chunks, usage_chunk]}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == choice["finish_reason"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == choice["message"]["content"]
    assert all(c["usage"] is None for c in chunks)


async def test_openai_stream_without_usage_and_the_models_list(handler) -> None:
    """No include_usage: no usage chunk. /v1/models lists the one model."""
    strings = await outputs(handler, openai("/v1/chat/completions", {**CHAT, "stream": True}))
    *chunks, done = events(strings)
    assert done == "[DONE]"
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks)
    (models,) = await outputs(handler, openai("/v1/models"))
    assert models["object"] == "list"
    (model,) = models["data"]
    assert (model["id"], model["object"]) == ("tiny", "model")
    assert set(model) == {"id", "object", "created", "owned_by"}


@pytest.mark.parametrize(
    ("route", "body", "param", "fragment"),
    [
        ("/v1/chat/completions", None, None, "must be a JSON object"),
        ("/v1/chat/completions", {"model": "x"}, "messages", "Field required"),
        ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, "temperature", "valid number"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 5000}, "max_tokens", "at most 64"),
        (
            "/v1/chat/completions",
            {**CHAT, "max_tokens": None, "max_completion_tokens": 0},
            "max_completion_tokens",
            "greater than or equal to 1",
        ),
        ("/v1/chat/completions", {**CHAT, "tools": []}, "tools", "Extra inputs"),
        (
            "/v1/chat/completions",
            {**CHAT, "stream_options": {"include_usage": True}},
            "stream_options",
            "only allowed when stream is true",
        ),
        (
            "/v1/chat/completions",
            {**CHAT, "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role",
            "Input should be",
        ),
        (
            "/v1/chat/completions",
            {**CHAT, "messages": [{"role": "assistant", "content": "x"}]},
            None,
            "end with a user message",
        ),
        ("/v1/chat/completions", {**CHAT, "n": 2}, "n", "Input should be 1"),
        ("/v1/completions", {"prompt": "x"}, "openai_route", "serves /v1/chat/completions"),
    ],
)
async def test_openai_bad_requests_answer_in_the_openai_error_schema(
    handler, route, body, param, fragment
) -> None:
    """Each bad request yields one OpenAI error object naming the client's field."""
    (out,) = await outputs(handler, openai(route, body))
    error = out["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert handler.generator.expected == 0


async def test_openai_prompt_over_the_context_is_context_length_exceeded(handler) -> None:
    """A chat longer than the model's context answers OpenAI's context_length_exceeded."""
    long_chat = {"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 8}
    (out,) = await outputs(handler, openai("/v1/chat/completions", long_chat))
    assert out["error"]["code"] == "context_length_exceeded"
    assert out["error"]["param"] == "messages"
