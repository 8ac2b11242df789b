"""The continuous-batching core: shared forward passes, exact greedy tokens, per-row control.

Every test runs on both decode paths: the eager lane (dynamic cache) and the static lane
(fixed slots, one fixed-shape step per bucket: what CUDA graphs capture on the GPU).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from generation_helpers import reference

from podpulse.common.testing import wait_until
from podpulse.worker._batching import BatchGenerator, GenerationRequest
from podpulse.worker._model import LoadedModel

QUESTIONS = [
    "How do I become a data scientist?",
    "Skills: SQL",
    "I am a nurse in Berlin and want to move into software engineering. Where do I start?",
    "Hi",
]
N = 12


@pytest.fixture(scope="module")
def prompts(loaded: LoadedModel) -> list[list[int]]:
    tok = loaded.tokenizer
    return [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)[
            "input_ids"
        ]
        for q in QUESTIONS
    ]


@pytest.fixture(params=["eager", "static"])
def decode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(loaded: LoadedModel, decode: str) -> Iterator:
    made: list[BatchGenerator] = []

    def factory(max_batch: int = 4, eos: tuple[int, ...] = (), **kwargs) -> BatchGenerator:
        gen = BatchGenerator(
            loaded.model, loaded.tokenizer, max_batch_size=max_batch, eos_token_ids=eos,
            pad_token_id=loaded.pad_token_id, decode=decode, **kwargs,
        )  # fmt: skip
        assert gen.decode == decode
        made.append(gen)
        return gen

    yield factory
    for gen in made:
        gen.close()
        # Jobs that fit must never fall back: the static variant really decodes statically.
        assert gen.stats.eager_fallbacks == 0
        assert (gen.stats.static_steps > 0) == (decode == "static" and gen.stats.jobs > 0)


def test_greedy_batched_equals_alone_equals_generate(loaded, prompts, make) -> None:
    """Four left-padded greedy rows give exactly model.generate's tokens for each prompt."""
    expected = [reference(loaded, ids, N) for ids in prompts]
    alone = make(max_batch=1).generate_all([GenerationRequest(ids, N) for ids in prompts])
    gen = make(autostart=False)
    futures = [gen.submit(GenerationRequest(ids, N)) for ids in prompts]
    gen.start()
    batched = [f.result(timeout=60) for f in futures]
    assert [r.token_ids for r in alone] == expected
    assert [r.token_ids for r in batched] == expected
    assert {r.batch_size for r in batched} == {4}
    assert all(r.finish_reason == "length" for r in batched)


def test_a_batch_of_four_shares_its_forward_passes(prompts, make) -> None:
    """Four jobs of N tokens cost N forward passes together, where in turn they cost 4N."""
    in_turn = make(max_batch=1)
    in_turn.generate_all([GenerationRequest(ids, N) for ids in prompts])
    batched = make(autostart=False)
    futures = [batched.submit(GenerationRequest(ids, N)) for ids in prompts]
    batched.start()
    [f.result(timeout=60) for f in futures]
    assert in_turn.stats.forward_calls == 4 * N
    assert batched.stats.forward_calls == N
    assert batched.stats.prefill_calls == 1
    assert batched.stats.max_batch_size == 4


def test_job_arriving_mid_batch_joins_and_keeps_its_greedy_tokens(loaded, prompts, make) -> None:
    """Jobs submitted after decoding began join the running batch; tokens equal generate's."""
    gen = make(autostart=False)
    late: list[Any] = []

    def hook(_rows: int) -> None:
        if gen.stats.forward_calls in (3, 6):
            late.append(gen.submit(GenerationRequest(prompts[len(late) + 2], N)))

    gen.step_hook = hook
    first = gen.submit(GenerationRequest(prompts[0], N))
    gen.start()
    assert first.result(timeout=60).token_ids == reference(loaded, prompts[0], N)
    assert [f.result(timeout=60).token_ids for f in late] == [
        reference(loaded, prompts[2], N), reference(loaded, prompts[3], N),
    ]  # fmt: skip
    assert gen.stats.max_batch_size == 3
    # Three jobs shared the steps: far fewer passes than 3 * N run one after another.
    assert gen.stats.forward_calls < 2 * N


def test_seeded_sampling_is_the_same_alone_or_batched(prompts, make) -> None:
    """A sampled job with a seed yields the same tokens whatever it was batched with."""
    gen = make()
    request = GenerationRequest(prompts[0], N, temperature=0.9, top_p=0.9, seed=7)
    alone = gen.generate_all([request])[0]
    mixed = gen.generate_all([GenerationRequest(prompts[1], N, temperature=1.0, seed=1), request])
    assert mixed[1].token_ids == alone.token_ids
    other_seed = gen.generate_all([GenerationRequest(prompts[0], N, temperature=0.9, seed=8)])
    assert other_seed[0].token_ids != alone.token_ids


def test_per_row_limits_stop_strings_and_eos(loaded, prompts, make) -> None:
    """Rows in one batch end on their own max_new_tokens, stop string or EOS token."""
    greedy = reference(loaded, prompts[0], N)
    text = loaded.tokenizer.decode(greedy)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    eos_token = greedy[5]
    gen = make(eos=(eos_token,))
    short, stopped, eos_row = gen.generate_all([
        GenerationRequest(prompts[1], 3),
        GenerationRequest(prompts[0], N, stop=(stop,)),
        GenerationRequest(prompts[0], N),
    ])  # fmt: skip
    assert len(short.token_ids) <= 3
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert text.startswith(stopped.text)
    assert eos_row.finish_reason == "stop"
    assert eos_row.token_ids == greedy[: greedy.index(eos_token)]


def test_a_failing_forward_fails_its_jobs_and_the_loop_keeps_serving(
    loaded, prompts, make, monkeypatch
) -> None:
    """An exception inside the model reaches every job in flight; the next job succeeds."""
    gen = make()
    real = loaded.model.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", flaky)
    futures = [gen.submit(GenerationRequest(ids, N)) for ids in prompts[:2]]
    for future in futures:
        with pytest.raises(torch.OutOfMemoryError):
            future.result(timeout=60)
    monkeypatch.setattr(loaded.model, "forward", real)
    assert len(gen.generate_all([GenerationRequest(prompts[0], 4)])[0].token_ids) == 4


async def test_cancelled_job_leaves_the_batch(prompts, make) -> None:
    """Cancelling the awaiting task drops its row; the other job still finishes."""
    gen = make(autostart=False)
    started = threading.Event()
    gen.step_hook = lambda _rows: started.set()
    doomed = asyncio.create_task(gen.generate(GenerationRequest(prompts[0], 400)))
    survivor = asyncio.create_task(gen.generate(GenerationRequest(prompts[1], 40)))
    await asyncio.sleep(0)
    gen.start()
    await asyncio.to_thread(started.wait, 30)
    doomed.cancel()
    result = await survivor
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert len(result.token_ids) == 40
    # close() waits for the rows in flight: had the cancelled row stayed, that is 400 steps.
    await asyncio.to_thread(gen.close)
    assert gen.stats.forward_calls < 100


async def test_stream_hands_over_each_step_and_closing_early_frees_the_slot(
    loaded, prompts, make
) -> None:
    """stream() yields each step's token as it comes (the steps since the last yield when the
    consumer was busy), then the result whose tokens they are; closing it drops the row at the
    next step, so the one slot is free long before the closed job's 400 tokens."""
    gen = make(max_batch=1)
    items = [item async for item in gen.stream(GenerationRequest(prompts[0], N))]
    *steps, result = items
    assert all(len(ids) >= 1 for ids in steps)
    assert [i for ids in steps for i in ids] == result.token_ids == reference(loaded, prompts[0], N)
    # From here the test lets the generation thread run one step per release.
    allowed = threading.Semaphore(0)

    def hook(_rows: int) -> None:
        allowed.acquire(timeout=30)

    gen.step_hook = hook
    calls = gen.stats.forward_calls
    early = gen.stream(GenerationRequest(prompts[1], 400))
    allowed.release()  # the prefill
    assert len(await anext(early)) == 1
    allowed.release(3)  # three decode steps while nobody reads; the fifth pass then waits
    await asyncio.to_thread(
        wait_until, lambda: gen.stats.forward_calls - calls == 5, 30, "three more steps"
    )
    assert len(await anext(early)) == 3
    await early.aclose()
    gen.step_hook = None
    allowed.release()  # the fifth pass ends, and the closed row leaves with it
    assert len((await gen.generate(GenerationRequest(prompts[2], N))).token_ids) == N
    # Five passes for the closed job, then the next job's N: none decoded for nobody.
    assert gen.stats.forward_calls - calls == 5 + N
