"""The model handler, called directly with job dicts on the tiny model."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import structlog
import torch
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from podpulse.common.testing import wait_until
from podpulse.worker.handler import ModelHandler, build_handler, runpod_config
from podpulse.worker.settings import WorkerSettings
from podpulse.worker.tiny import TINY_MODEL_NAME, ensure_tiny_model

SECRET_QUESTION = "I am Jane Roe, HIV positive, living at 12 Elm Street; which jobs suit me?"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.getbasetemp() / "podpulse-cache"
    ensure_tiny_model(cache)
    return cache


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def make(loaded, spans):
    made: list[ModelHandler] = []

    def factory(**fields) -> ModelHandler:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        settings = WorkerSettings(**{"max_concurrency": 4, "batch_wait_ms": 20, **fields})
        made.append(
            build_handler(settings, loaded, model_name="tiny", tracer=provider.get_tracer("t"))
        )
        return made[-1]

    yield factory
    for each in made:
        each.generator.close()


def job(**payload) -> dict:
    return {"id": "job-1", "input": payload}


async def test_question_job_returns_text_usage_timings_validation_model(make) -> None:
    """A valid job answers every documented output field, consistently filled."""
    payload = {"question": "How do I become a data analyst?", "profile": {"skills": ["Excel"]},
               "max_new_tokens": 8, "seed": 3}  # fmt: skip
    out = await make().answer(job(**payload))
    assert "error" not in out
    assert isinstance(out["text"], str)
    assert out["usage"]["output_tokens"] <= 8
    assert out["usage"]["input_tokens"] > 20
    timings = out["timings"]
    assert timings["generate_ms"] > 0
    assert timings["tokens_per_second"] > 0
    # The first token comes after the wait and before the last one.
    end_ms = timings["queue_ms"] + timings["generate_ms"]
    assert timings["queue_ms"] < timings["first_token_ms"] <= end_ms
    assert set(out["validation"]) >= {"passed", "failures", "attempts"}
    assert out["validation"]["passed"] is (out["validation"]["failures"] == [])
    assert out["model"] == "tiny"
    json.dumps(out)  # RunPod ships it as JSON


async def test_messages_job_and_seed_reproducibility(make) -> None:
    """A chat job works; the same seed and parameters give the same text."""
    handler = make()
    payload = {"messages": [{"role": "user", "content": "Hello"}], "max_new_tokens": 6,
               "temperature": 0.9, "seed": 11}  # fmt: skip
    first, second = await handler.answer(job(**payload)), await handler.answer(job(**payload))
    assert "error" not in first
    assert first["text"] == second["text"]
    assert first["seed"] == 11


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({}, "exactly one of 'messages' or 'question'"),
        ({"question": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
        (
            {"question": "a", "max_new_tokens": 5000},
            "input.max_new_tokens: Value error, must be at most",
        ),
        ({"question": "a", "temperature": 3}, "input.temperature"),
        ({"question": "a", "top_p": 0}, "input.top_p"),
        ({"question": "a", "seed": -1}, "input.seed"),
        ({"question": "a", "stop": ["x"] * 5}, "input.stop"),
        ({"question": "a", "max_tokens": 5}, "input.max_tokens: Extra inputs are not permitted"),
        ({"question": 5}, "input.question"),
        ({"question": "a", "profile": {"age": 3}}, "input.profile.age"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "input.messages.0.role"),
        ({"messages": [{"role": "user", "content": "x"}], "profile": {}}, "'profile' goes with"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "end with a user message"),
        ({"question": "   "}, "blank"),
    ],
)
async def test_bad_input_is_an_error_naming_the_field(make, payload, fragment) -> None:
    """Each malformed input returns only {'error': ...} mentioning what was wrong."""
    handler = make()
    out = await handler.answer(job(**payload))
    assert set(out) == {"error"}
    assert fragment in out["error"]
    assert handler.generator.expected == 0  # a rejected job is no longer awaited for batching


@pytest.mark.parametrize("bad_job", [{"id": "x", "input": "text"}, {"id": "x"}, {"input": [1]}])
async def test_input_that_is_not_an_object_is_an_error(make, bad_job) -> None:
    """A non-object input (or none) fails the job with a clear message."""
    out = await make().answer(bad_job)
    assert out == {"error": "invalid input: 'input' must be a JSON object"}


async def test_prompt_over_the_context_is_a_clear_error(make) -> None:
    """A prompt that does not fit the context fails with the token counts, not a crash."""
    handler = make(max_new_tokens=2000)
    out = await handler.answer(job(question="word " * 1500, max_new_tokens=2000))
    assert "exceeds the model's context of 2048 tokens" in out["error"]
    assert "error" not in await handler.answer(job(question="ok", max_new_tokens=2))


async def test_cuda_oom_fails_the_job_and_asks_for_a_worker_refresh(make, loaded, monkeypatch):
    """An out-of-memory in the model returns an error plus refresh_worker=True."""
    handler = make()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(loaded.model, "forward", oom)
    out = await handler.answer(job(question="hi", max_new_tokens=2))
    assert out == {"error": "CUDA out of memory; the worker will restart", "refresh_worker": True}


async def test_event_loop_keeps_running_while_the_model_generates(
    make, loaded, monkeypatch
) -> None:
    """Generation happens off the loop: every forward pass runs in another thread, and the
    loop keeps serving a ticker between the first and the last of them."""
    handler = make()
    loop_thread = threading.get_ident()
    forwards: list[tuple[int, int]] = []  # (thread, ticks the loop had made by then)
    ticks = 0
    done = asyncio.Event()
    forward = loaded.model.forward

    def recording_forward(*args, **kwargs):
        forwards.append((threading.get_ident(), ticks))
        return forward(*args, **kwargs)

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    monkeypatch.setattr(loaded.model, "forward", recording_forward)
    task = asyncio.create_task(ticker())
    await handler.answer(job(question="hi", max_new_tokens=150, temperature=0))
    done.set()
    await task
    assert len(forwards) > 2
    assert loop_thread not in {thread for thread, _ in forwards}
    assert forwards[-1][1] > forwards[0][1]  # the loop ticked while generation went on


async def test_concurrent_jobs_share_forward_passes(make) -> None:
    """Four concurrent greedy jobs run batched and each equals its answer when run alone."""
    handler = make()
    questions = ("a", "data science?", "move to Berlin", "salary talk")
    payloads = [{"question": q, "max_new_tokens": 10, "temperature": 0} for q in questions]
    alone = [await handler.answer(job(**p)) for p in payloads]
    calls = handler.generator.stats.forward_calls
    together = await asyncio.gather(*(handler.answer(job(**p)) for p in payloads))
    assert [t["text"] for t in together] == [a["text"] for a in alone]
    # 10 tokens each: 10 shared passes (11 if one job joined a step late), not 4 x 10 in turn.
    assert handler.generator.stats.forward_calls - calls <= 11
    assert handler.generator.stats.max_batch_size == 4


async def test_regeneration_is_off_by_default_and_returns_best_attempt_when_on(make) -> None:
    """Default: one attempt; max_regenerations=2 and an unmeetable check: 3 attempts, listed."""
    payload = {"question": "hi", "max_new_tokens": 4, "temperature": 0, "seed": 5}
    once = await make(validation_min_words=1000).answer(job(**payload))
    assert len(once["validation"]["attempts"]) == 1
    assert once["validation"]["passed"] is False
    retried = await make(validation_min_words=1000, max_regenerations=2).answer(job(**payload))
    attempts = retried["validation"]["attempts"]
    assert [a["seed"] for a in attempts] == [5, 6, 7]
    assert all("too_short" in a["checks"] for a in attempts)
    # A greedy job's retries sample, so they may differ; the first attempt wins ties.
    assert retried["validation"]["returned_attempt"] == 0
    assert retried["text"] == once["text"]


async def test_no_prompt_or_answer_text_in_logs_or_spans(make, spans) -> None:
    """Logs and spans carry ids, counts and timings but never the question or the answer."""
    handler = make()
    with structlog.testing.capture_logs() as logs:
        out = await handler.answer(job(question=SECRET_QUESTION, max_new_tokens=12, seed=1))
        await handler.answer(job(question=SECRET_QUESTION, temperature=9))
    dumped = json.dumps(logs, default=str) + json.dumps(
        [dict(s.attributes or {}) for s in spans.get_finished_spans()], default=str
    )
    assert "Jane" not in dumped
    assert "Elm Street" not in dumped
    assert len(out["text"]) > 3
    assert out["text"] not in dumped
    assert {entry["event"] for entry in logs} == {"job.done", "job.rejected"}


async def test_generation_span_follows_genai_conventions(make, spans) -> None:
    """One 'chat tiny' span per job with the gen_ai request and usage attributes."""
    out = await make().answer(job(question="hi", max_new_tokens=5, temperature=0.5, seed=9))
    (span,) = spans.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.name == "chat tiny"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "tiny"
    assert attrs["gen_ai.request.max_tokens"] == 5
    assert attrs["gen_ai.request.seed"] == 9
    assert attrs["gen_ai.usage.input_tokens"] == out["usage"]["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == out["usage"]["output_tokens"]
    assert attrs["podpulse.first_token_ms"] == out["timings"]["first_token_ms"]
    assert attrs["runpod.job.id"] == "job-1"


def test_runpod_config_loads_the_tiny_model_by_default(cache_dir) -> None:
    """Unset WORKER_MODEL_ID: the tiny model; an async-generator handler whose outputs the SDK
    aggregates, and the configured concurrency."""
    settings = WorkerSettings(cache_dir=cache_dir, max_concurrency=3)
    with structlog.testing.capture_logs() as logs:
        config = runpod_config(settings)
    (loaded,) = [e for e in logs if e["event"] == "model.loaded"]
    assert loaded["model"] == TINY_MODEL_NAME
    assert loaded["startup_s"] > 0  # the worker's share of a cold start is logged
    try:
        assert inspect.isasyncgenfunction(config["handler"])
        assert config["return_aggregate_stream"] is True
        # The dict the SDK reads refresh_worker from after every job (see _refresh).
        assert config["handler"].__self__.platform_config is config
        assert config["concurrency_modifier"](1) == 3
        payload = {"question": "hi", "max_new_tokens": 2}

        async def outputs() -> list:
            return [out async for out in config["handler"]({"id": "j", "input": payload})]

        (out,) = asyncio.run(outputs())
        assert out["model"] == TINY_MODEL_NAME
    finally:
        config["handler"].__self__.generator.close()


def test_model_that_cannot_load_stops_start_up_with_a_reason(tmp_path, cache_dir) -> None:
    """A missing folder or a non-causal-LM config exits at start-up with a one-line reason."""
    with pytest.raises(SystemExit, match="no such folder"):
        runpod_config(WorkerSettings(model_id=str(tmp_path / "missing"), cache_dir=cache_dir))
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32,
                                                     "num_hidden_layers": 1,
                                                     "num_attention_heads": 2}))  # fmt: skip
    with pytest.raises(SystemExit, match="is not a causal language model") as info:
        runpod_config(WorkerSettings(model_id=str(encoder), cache_dir=cache_dir))
    assert "\n" not in str(info.value)


def test_handler_module_never_imports_runpod() -> None:
    """The handler imports with runpod unimportable (GPU benchmark machines may lack it)."""
    code = "import sys; sys.modules['runpod'] = None; import podpulse.worker.handler"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


async def test_a_lone_job_does_not_wait_for_companions(make) -> None:
    """With nothing else announced, the loop starts at once despite a long batch window: with
    the window an hour long, the job is still answered (a loop waiting it out never would)."""
    handler = make(batch_wait_ms=500)
    handler.generator._batch_wait = 3600.0  # longer than the settings allow, to make it plain
    # The timeout only keeps a broken loop from hanging the suite.
    out = await asyncio.wait_for(handler.answer(job(question="hi", max_new_tokens=2)), 120)
    assert "error" not in out, out
    assert out["timings"]["queue_ms"] < 3_600_000
    assert handler.generator.expected == 0


async def test_default_max_new_tokens_respects_the_worker_cap(make) -> None:
    """Without max_new_tokens a job gets min(256, WORKER_MAX_NEW_TOKENS), never more."""
    out = await make(max_new_tokens=5).answer(job(question="hi", temperature=0))
    assert out["usage"]["output_tokens"] <= 5


async def test_a_step_that_never_returns_fails_its_jobs_and_asks_for_a_new_worker(make) -> None:
    """A forward pass stuck past WORKER_STALL_TIMEOUT_S (a hung GPU): each waiting job is
    answered with the reason and refresh_worker while the step still hangs, instead of waiting
    for a thread that is gone; once the step returns, the loop serves again."""
    handler = make(stall_timeout_s=0.3)
    release = threading.Event()
    handler.generator.step_hook = lambda _rows: release.wait(60)  # the pass that hangs
    try:
        outs = await asyncio.gather(*(
            handler.answer(job(question=f"q{i}", max_new_tokens=4)) for i in range(2)
        ))  # fmt: skip
        # Answered by the stall check, not by the step: it is still in progress, past the limit.
        assert handler.generator.stalled_for() > 0.3
    finally:
        release.set()
    for out in outs:
        assert out["refresh_worker"] is True
        assert out["error"].startswith("generation stalled: one generation step has run for")
        assert "(limit 0.3 s); the worker will restart" in out["error"]
    handler.generator.step_hook = None
    # The hung step is over only when the generation thread has left it; until then its stall
    # clock still runs and would fail the next job too.
    wait_until(lambda: handler.generator.stalled_for() == 0.0, 30, "the hung step to end")
    # A normal step on a loaded machine may itself outlast 0.3 s: the limit has done its part.
    handler.generator.stall_s = 60.0
    again = await handler.answer(job(question="after", max_new_tokens=2))
    assert "error" not in again, again
