"""The static decode path: fixed slots and buckets, equal to generate, the eager fallback.

On the CPU the static step runs uncaptured; on CUDA the same step is what each bucket's graph
captures, so these tests pin down everything but the capture itself.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from generation_helpers import reference
from transformers import Qwen2Config

from podpulse.worker._batching import BatchGenerator, GenerationRequest
from podpulse.worker._lane import Row
from podpulse.worker._model import LoadedModel
from podpulse.worker._static_decode import (
    StaticCacheError,
    StaticLane,
    bucket_sizes,
    require_room,
    resolve_decode,
)
from podpulse.worker.handler import build_handler
from podpulse.worker.settings import WorkerSettings

QUESTIONS = [
    "How do I become a data scientist?",
    "Skills: SQL",
    "I am a nurse in Berlin and want to move into software engineering. Where do I start?",
    "Hi",
    "Which skills should I learn first, and how long will the transition take?",
    "Negotiate the offer",
]


@pytest.fixture(scope="module")
def prompts(loaded: LoadedModel) -> list[list[int]]:
    tok = loaded.tokenizer
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    return [tok.apply_chat_template(c, add_generation_prompt=True)["input_ids"] for c in chats]


@pytest.fixture
def make(loaded: LoadedModel) -> Iterator:
    made: list[BatchGenerator] = []

    def factory(**kwargs: Any) -> BatchGenerator:
        options: dict[str, Any] = {"max_batch_size": 4, "eos_token_ids": (), "decode": "static"}
        gen = BatchGenerator(
            loaded.model, loaded.tokenizer, pad_token_id=loaded.pad_token_id,
            **{**options, **kwargs},
        )  # fmt: skip
        made.append(gen)
        return gen

    yield factory
    for gen in made:
        gen.close()


def test_buckets_are_powers_of_two_then_the_slot_count() -> None:
    """Every batch size has a bucket: the smallest power of two above it, capped at the slots."""
    assert bucket_sizes(1) == (1,)
    assert bucket_sizes(4) == (1, 2, 4)
    assert bucket_sizes(6) == (1, 2, 4, 6)
    assert bucket_sizes(8) == (1, 2, 4, 8)


def test_decode_path_follows_request_device_and_model() -> None:
    """auto: graph on CUDA, eager on CPU; graph off CUDA is static; sliding windows stay eager."""
    full = Qwen2Config(num_hidden_layers=2)
    assert resolve_decode("auto", device_type="cuda", config=full) == ("graph", None)
    assert resolve_decode("auto", device_type="cpu", config=full) == ("eager", None)
    assert resolve_decode("static", device_type="cpu", config=full) == ("static", None)
    assert resolve_decode("eager", device_type="cuda", config=full) == ("eager", None)
    path, note = resolve_decode("graph", device_type="cpu", config=full)
    assert path == "static"
    assert note is not None
    assert "CUDA" in note
    sliding = Qwen2Config(num_hidden_layers=2, use_sliding_window=True, max_window_layers=1)
    assert resolve_decode("graph", device_type="cuda", config=sliding)[0] == "eager"
    with pytest.raises(ValueError, match="unknown decode path"):
        resolve_decode("fast", device_type="cpu", config=full)


def test_static_cache_larger_than_free_memory_is_a_clear_error() -> None:
    """A cache that would leave no room says its size and what is free."""
    gib = 1024**3
    require_room(4 * gib, 8 * gib, slots=4, max_tokens=2048)
    with pytest.raises(StaticCacheError, match=r"8 slots x 4096 tokens needs 7.50 GiB; 8.00 GiB"):
        require_room(int(7.5 * gib), 8 * gib, slots=8, max_tokens=4096)


def test_jobs_joining_and_leaving_mid_batch_keep_generates_tokens(loaded, prompts, make) -> None:
    """Six jobs of different lengths through four slots, joining at different steps: each
    decodes exactly generate's greedy tokens, though rows move down and slots are reused."""
    limits = [3, 14, 6, 10, 4, 8]
    gen = make(autostart=False)
    late: list[tuple[int, Any]] = []

    def hook(_rows: int) -> None:
        # Jobs 2..5 arrive while others decode, some when a slot has just been freed.
        if gen.stats.forward_calls in (2, 4, 5, 9) and len(late) < 4:
            i = len(late) + 2
            late.append((i, gen.submit(GenerationRequest(prompts[i], limits[i]))))

    gen.step_hook = hook
    first = [gen.submit(GenerationRequest(prompts[i], limits[i])) for i in (0, 1)]
    gen.start()
    results = {i: f.result(timeout=60) for i, f in enumerate(first)}
    results.update({i: f.result(timeout=60) for i, f in late})
    assert len(results) == 6
    for i, result in results.items():
        assert result.token_ids == reference(loaded, prompts[i], limits[i]), i
        assert result.finish_reason == "length"
        assert 0 < result.first_token_ms <= result.queue_ms + result.generate_ms
    assert gen.stats.static_steps > 0
    assert gen.stats.eager_fallbacks == 0
    assert gen.stats.max_batch_size >= 3


def test_a_job_too_long_for_the_slots_decodes_eagerly_beside_them(loaded, prompts, make) -> None:
    """A prompt plus max_new_tokens over the static length runs on the eager lane, in the same
    steps as the static rows, and both keep generate's tokens."""
    long_ids, short_ids = prompts[2], prompts[3]
    n = 10
    length = len(short_ids) + n
    assert len(long_ids) + n > length  # the long job cannot fit a slot
    gen = make(static_max_tokens=length, autostart=False)
    futures = [gen.submit(GenerationRequest(ids, n)) for ids in (long_ids, short_ids)]
    gen.start()
    long_result, short_result = (f.result(timeout=60) for f in futures)
    assert long_result.token_ids == reference(loaded, long_ids, n)
    assert short_result.token_ids == reference(loaded, short_ids, n)
    assert gen.stats.eager_fallbacks == 1
    assert gen.stats.static_steps == n - 1
    # One lane each: neither row shared a forward pass with the other.
    assert long_result.batch_size == short_result.batch_size == 1


def test_uneven_buckets_pad_with_dead_rows(loaded, prompts, make) -> None:
    """Three rows run in the four-row bucket; the padding row changes nobody's tokens."""
    gen = make(autostart=False)
    futures = [gen.submit(GenerationRequest(ids, 7)) for ids in prompts[:3]]
    gen.start()
    assert [f.result(timeout=60).token_ids for f in futures] == [
        reference(loaded, ids, 7) for ids in prompts[:3]
    ]
    assert gen.stats.max_batch_size == 3


async def test_handler_answers_the_same_on_the_static_path(loaded) -> None:
    """WORKER_DECODE=static reaches the loop; a seeded job answers as on the eager path."""
    question = "How do I start in UX research?"
    job = {"id": "j", "input": {"question": question, "max_new_tokens": 12, "seed": 5}}
    answers = {}
    for decode in ("eager", "static"):
        settings = WorkerSettings(decode=decode, max_concurrency=2, batch_wait_ms=0)
        handler = build_handler(settings, loaded, model_name="tiny")
        try:
            assert handler.generator.decode == decode
            answers[decode] = await handler.answer(job)
        finally:
            handler.generator.close()
    assert "error" not in answers["static"]
    assert answers["static"]["text"] == answers["eager"]["text"]
    assert answers["static"]["usage"] == answers["eager"]["usage"]


class ReplayedStep:
    """Stands in for a CUDA graph on the CPU: a replay reruns the captured step into its output."""

    def __init__(self, step: Callable[[], torch.Tensor], out: torch.Tensor, skew: float) -> None:
        self.step, self.out, self.skew, self.replays = step, out, skew, 0

    def replay(self) -> None:
        self.replays += 1
        self.out.copy_(self.step() + self.skew)


class StandIn:
    """A capture function for the CPU: stand-in graphs, optionally skewed or failing."""

    def __init__(self, skew: float = 0.0, fail: bool = False) -> None:
        self.skew, self.fail = skew, fail
        self.graphs: list[ReplayedStep] = []

    def __call__(
        self, step: Callable[[], torch.Tensor], _pool: object
    ) -> tuple[ReplayedStep, torch.Tensor]:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\ndetails")
        out = step().clone()
        self.graphs.append(ReplayedStep(step, out, self.skew))
        return self.graphs[-1], out


def greedy(lane: StaticLane, requests: list[GenerationRequest]) -> list[list[int]]:
    """Drive the lane as the loop does, greedy, every request to its max_new_tokens."""
    rows = [Row(r, concurrent.futures.Future(), 0.0, 0) for r in requests]
    with torch.inference_mode():
        for row, logits in zip(rows, lane.prefill(rows), strict=True):
            row.tokens.append(int(logits.argmax()))
        while len(rows[0].tokens) < requests[0].max_new_tokens:
            for row, logits in zip(lane.rows, lane.decode(), strict=True):
                row.tokens.append(int(logits.argmax()))
    return [r.tokens for r in rows]


def test_captured_steps_are_replayed_and_decode_generates_tokens(loaded, prompts) -> None:
    """With each bucket captured (a stand-in graph on the CPU), decode replays the bucket's
    graph and reads its output buffer: three rows in the four-row bucket keep their tokens."""
    capture = StandIn()
    lane = StaticLane(loaded.model, slots=4, max_tokens=160, pad_token_id=loaded.pad_token_id,
                      capture=True, capture_step=capture)  # fmt: skip
    assert [(b.size, b.captured, b.error) for b in lane.report.buckets] == [
        (1, True, None), (2, True, None), (4, True, None),
    ]  # fmt: skip
    requests = [GenerationRequest(ids, 8) for ids in prompts[:3]]
    assert greedy(lane, requests) == [reference(loaded, list(r.input_ids), 8) for r in requests]
    # Largest bucket captured first; each replayed once by its check, the four-row one by decode.
    assert [g.replays for g in capture.graphs] == [1 + 7, 1, 1]


@pytest.mark.parametrize(
    ("capture", "error"),
    [
        (StandIn(skew=1.0), "replay differs from the uncaptured step by up to 1"),
        (StandIn(fail=True), "operation not permitted when stream is capturing"),
    ],
)
def test_a_capture_that_fails_or_replays_wrong_is_not_used(loaded, prompts, capture, error):
    """A graph that disagrees with the uncaptured step, or cannot be captured, is dropped with
    its reason; the bucket runs uncaptured and decodes the right tokens."""
    lane = StaticLane(loaded.model, slots=2, max_tokens=160, pad_token_id=loaded.pad_token_id,
                      capture=True, capture_step=capture)  # fmt: skip
    assert [(b.captured, b.error) for b in lane.report.buckets] == [(False, error)] * 2
    requests = [GenerationRequest(ids, 6) for ids in prompts[:2]]
    assert greedy(lane, requests) == [reference(loaded, list(r.input_ids), 6) for r in requests]
