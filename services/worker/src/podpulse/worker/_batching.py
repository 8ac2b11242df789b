"""Continuous batching: one thread runs every job's decode steps in shared forward passes.

Why a hand-rolled decode loop rather than ``model.generate`` per batch: each job brings its own
``max_new_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop`` strings, which one
``generate`` call cannot mix; and a job that arrives while a batch is decoding should not wait
for the whole batch to finish (seconds, at the user's SLO). Here a job joins at the next step:
its prompt is prefilled on its own, its KV cache is left-padded to the batch's length and
concatenated, and from then on it shares every decode step. Finished rows leave at once.
Greedy rows reproduce ``generate``'s greedy tokens; sampled rows draw from their own seeded
generator, so a seed gives the same text whether the job ran alone or in a batch.

Only torch and transformers are needed here (no pydantic, runpod or telemetry), so the GPU
benchmark can drive this core on a machine that has nothing else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._decode_ops import kv_tensors, pad_left, sample, set_kv_tensors
from ._generation import (
    FINISH_LENGTH,
    FINISH_STOP,
    BatchStats,
    GenerationRequest,
    GenerationResult,
)

__all__ = ["BatchGenerator", "BatchStats", "GenerationRequest", "GenerationResult"]

# How often an idle loop waiting for announced companions looks again.
_POLL_S = 0.0005


@dataclass(slots=True)
class _Row:
    request: GenerationRequest
    future: concurrent.futures.Future[GenerationResult]
    enqueued: float
    seed: int
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    started: float = 0.0
    batch_size: int = 1
    finish_reason: str | None = None
    # Set from the event loop when the awaiting task is cancelled (e.g. RunPod's job-stop);
    # a plain bool is enough: the thread only reads it, and a stale read costs one step.
    cancelled: bool = False

    @property
    def next_position(self) -> int:
        # Position of the newest sampled token, the one the next decode step feeds in.
        return len(self.request.input_ids) + len(self.tokens) - 1


class BatchGenerator:
    """Owns the model's generation thread; jobs are submitted from any thread or event loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int,
        eos_token_ids: Iterable[int],
        pad_token_id: int,
        batch_wait_ms: float = 0.0,
        autostart: bool = True,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = next(model.parameters()).device
        # transformers 5.24 renamed ``past_key_values`` to ``cache``; the GPU image may carry
        # an older release, so ask the signature rather than the version.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.max_batch_size = max_batch_size
        self._eos = frozenset(eos_token_ids)
        self._pad = pad_token_id
        self._batch_wait = batch_wait_ms / 1000.0
        self._queue: queue.SimpleQueue[_Row | None] = queue.SimpleQueue()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self.stats = BatchStats()
        self._dead: BaseException | None = None  # why the generation thread ended, if it did
        # Jobs a caller has announced (arrived, not yet submitted). Written from the event loop,
        # read here: an idle loop waits for companions only while some are on their way, so a
        # lone job never pays the batch wait. A stale read costs at most one wait or one
        # separate prefill.
        self.expected = 0
        # Called after each forward pass with the number of rows in it (tests use it to make
        # a job arrive mid-batch deterministically).
        self.step_hook: Callable[[int], None] | None = None
        self._thread = threading.Thread(target=self._run, name="podpulse-generate", daemon=True)
        if autostart:
            self.start()

    def start(self) -> None:
        """Start the generation thread (idempotent)."""
        if not self._thread.is_alive():
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after the jobs in flight; later submissions are never answered."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> concurrent.futures.Future[GenerationResult]:
        """Queue a job; the future resolves with its result or the exception that ended it."""
        return self._enqueue(request).future

    def _enqueue(self, request: GenerationRequest) -> _Row:
        if self._dead is not None:
            raise RuntimeError("the generation thread has stopped") from self._dead
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        future: concurrent.futures.Future[GenerationResult] = concurrent.futures.Future()
        row = _Row(request, future, time.perf_counter(), seed)
        self._queue.put(row)
        return row

    async def generate(
        self, request: GenerationRequest, *, announced: bool = False
    ) -> GenerationResult:
        """Submit a job and await it without blocking the event loop.

        ``announced``: the caller counted this job in ``expected`` when it arrived; it is
        uncounted here, once the job is in the queue.
        """
        row = self._enqueue(request)
        if announced:
            self.expected -= 1
        try:
            return await asyncio.wrap_future(row.future)
        except asyncio.CancelledError:
            # The thread drops the row at its next step instead of decoding for nobody.
            row.cancelled = True
            raise

    def generate_all(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Submit several jobs at once and wait for all (benchmarks and tests)."""
        futures = [self.submit(r) for r in requests]
        return [f.result() for f in futures]

    # -- the generation thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as exc:
            # Whatever ended the loop, no job may wait forever for a thread that is gone.
            self._dead = exc
            self._fail_all([], exc)
            self._drain(exc)
            raise

    def _loop(self) -> None:
        while True:
            fresh = self._admit()
            if fresh is None:
                break
            try:
                if fresh:
                    logits = self._prefill(fresh)
                    self._choose(fresh, logits)
                elif self._rows:
                    logits = self._decode()
                    self._choose(self._rows, logits)
                self._retire()
            except Exception as exc:  # every job in flight must hear of it
                self._fail_all(fresh, exc)

    def _drain(self, exc: BaseException) -> None:
        while True:
            try:
                row = self._queue.get_nowait()
            except queue.Empty:
                return
            if row is not None:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    row.future.set_exception(exc)

    def _admit(self) -> list[_Row] | None:
        """Rows to prefill this step (maybe none); None when the generator is closing."""
        room = self.max_batch_size - len(self._rows)
        fresh: list[_Row] = []
        if room <= 0:
            return fresh
        if not self._rows:
            first = self._queue.get()
            if first is None:
                return None
            fresh.append(first)
            # When idle, wait a moment for companions: jobs the SDK took in one batch reach the
            # handler a few hundred microseconds apart and should share their first prefill.
            deadline = time.perf_counter() + self._batch_wait
            while len(fresh) < room and (remaining := deadline - time.perf_counter()) > 0:
                try:
                    item = self._queue.get(timeout=min(remaining, _POLL_S))
                except queue.Empty:
                    if self.expected <= 0:
                        break
                    continue
                if item is None:
                    self._queue.put(None)
                    break
                fresh.append(item)
        while len(fresh) < room:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # finish the rows in flight, then stop
                break
            fresh.append(item)
        live = [r for r in fresh if not r.cancelled and r.future.set_running_or_notify_cancel()]
        now = time.perf_counter()
        for row in live:
            row.started = now
            if row.request.temperature > 0:
                row.generator = torch.Generator(device=self._device)
                row.generator.manual_seed(row.seed)
        return live

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        out = self._model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kwarg: cache},
            logits_to_keep=1,
        )
        self.stats.forward_calls += 1
        if self.step_hook is not None:
            self.step_hook(input_ids.shape[0])
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _prefill(self, fresh: list[_Row]) -> torch.Tensor:
        from transformers import DynamicCache

        width = max(len(r.request.input_ids) for r in fresh)
        ids = torch.full((len(fresh), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(fresh), width), dtype=torch.long)
        for i, row in enumerate(fresh):
            n = len(row.request.input_ids)
            ids[i, width - n :] = torch.tensor(list(row.request.input_ids), dtype=torch.long)
            mask[i, width - n :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            cache = DynamicCache(config=self._model.config)
        except TypeError:  # transformers before 4.56 builds its layers lazily
            cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        self.stats.prefill_calls += 1
        self.stats.jobs += len(fresh)
        self._merge(fresh, cache, mask)
        self._note_batch()
        return logits

    def _merge(self, fresh: list[_Row], cache: Any, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._rows, self._cache, self._mask = list(fresh), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        old_mask = pad_left(self._mask, width)
        self._mask = torch.cat([old_mask, pad_left(mask, width)], dim=0)
        merged = [
            torch.cat([pad_left(old, width, -2), pad_left(new, width, -2)])
            for old, new in zip(kv_tensors(self._cache), kv_tensors(cache), strict=True)
        ]
        set_kv_tensors(self._cache, merged)
        self._rows.extend(fresh)

    def _decode(self) -> torch.Tensor:
        assert self._mask is not None  # _rows non-empty implies a cache
        ids = torch.tensor([[r.tokens[-1]] for r in self._rows], device=self._device)
        positions = torch.tensor([[r.next_position] for r in self._rows], device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        self._note_batch()
        return self._forward(ids, self._mask, positions, self._cache)

    def _note_batch(self) -> None:
        size = len(self._rows)
        self.stats.max_batch_size = max(self.stats.max_batch_size, size)
        for row in self._rows:
            row.batch_size = max(row.batch_size, size)

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> None:
        greedy = logits.argmax(dim=-1).tolist()
        for row, logit_row, argmax in zip(rows, logits, greedy, strict=True):
            request = row.request
            token = argmax
            if request.temperature > 0:
                token = sample(logit_row, request.temperature, request.top_p, row.generator)
            if token in self._eos:
                row.finish_reason = FINISH_STOP
                continue
            row.tokens.append(token)
            if request.stop and self._hit_stop(row):
                row.finish_reason = FINISH_STOP
            elif len(row.tokens) >= request.max_new_tokens:
                row.finish_reason = FINISH_LENGTH

    def _hit_stop(self, row: _Row) -> bool:
        # A stop string of b bytes spans at most b + 1 byte-level tokens; decoding only that
        # tail keeps the check O(1) per step.
        span = max(len(s.encode()) for s in row.request.stop) + 2
        tail = self._tokenizer.decode(row.tokens[-span:], skip_special_tokens=True)
        return any(s in tail for s in row.request.stop)

    def _retire(self) -> None:
        keep: list[int] = []
        for i, row in enumerate(self._rows):
            if row.finish_reason is not None:
                self._resolve(row)
            elif row.cancelled:
                pass
            else:
                keep.append(i)
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        assert self._mask is not None  # rows imply a mask
        index = torch.tensor(keep, device=self._device)
        self._rows = [self._rows[i] for i in keep]
        mask = self._mask.index_select(0, index)
        # Columns that were padding for every remaining row can go.
        first = int(mask.any(dim=0).nonzero()[0].item())
        self._mask = mask[:, first:]
        set_kv_tensors(
            self._cache,
            [t.index_select(0, index)[:, :, first:, :] for t in kv_tensors(self._cache)],
        )

    def _resolve(self, row: _Row) -> None:
        text = self._tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = [i for i in (text.find(s) for s in row.request.stop) if i >= 0]
        if cut:
            text = text[: min(cut)]
        now = time.perf_counter()
        result = GenerationResult(
            token_ids=list(row.tokens),
            text=text,
            finish_reason=row.finish_reason or FINISH_STOP,
            seed=row.seed,
            queue_ms=(row.started - row.enqueued) * 1000.0,
            generate_ms=(now - row.started) * 1000.0,
            batch_size=row.batch_size,
        )
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            row.future.set_result(result)

    def _fail_all(self, fresh: list[_Row], exc: BaseException) -> None:
        rows = {id(r): r for r in [*self._rows, *fresh]}
        self._rows, self._cache, self._mask = [], None, None
        for row in rows.values():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                row.future.set_exception(exc)
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
