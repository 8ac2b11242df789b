"""Continuous batching: one thread runs every job's decode steps in shared forward passes.

Why a hand-rolled decode loop rather than ``model.generate`` per batch: each job brings its own
``max_new_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop`` strings, which one
``generate`` call cannot mix; and a job that arrives while a batch is decoding should not wait
for the whole batch to finish (seconds, at the user's SLO). Here a job joins at the next step:
its prompt is prefilled, its KV cache joins its lane's, and from then on it shares every
decode step. Finished rows leave at once. Greedy rows reproduce ``generate``'s greedy tokens;
sampled rows draw from their own seeded generator, so a seed gives the same text whether the
job ran alone or in a batch.

Where the KV cache lives is a lane's business (``_lane``): the eager lane grows one dynamic
cache; the static lane (``decode="static"`` or ``"graph"``) keeps fixed slots and one
fixed-shape step per batch size, captured as CUDA graphs on the GPU. A job whose prompt and
``max_new_tokens`` exceed the static length is decoded on the eager lane beside the static
rows rather than refused: two forward passes a step while it runs, the same tokens.

Only torch and transformers are needed here (no pydantic, runpod or telemetry), so the GPU
benchmark can drive this core on a machine that has nothing else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import random
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

import torch

from ._decode_ops import sample
from ._eager_lane import EagerLane
from ._generation import (
    FINISH_LENGTH,
    FINISH_STOP,
    BatchStats,
    GenerationRequest,
    GenerationResult,
)
from ._lane import Lane, ModelCall, Row
from ._static_decode import Decode, StaticLane, StaticReport, resolve_decode

__all__ = [
    "BatchGenerator",
    "BatchStats",
    "GenerationRequest",
    "GenerationResult",
    "GenerationStalled",
]

# How often an idle loop waiting for announced companions looks again.
_POLL_S = 0.0005
# How often a waiting job looks at the step's age (at most; shorter for a short stall limit).
_STALL_CHECK_S = 1.0
# What a streamed job's timer puts in its queue to have the step's age looked at (by identity).
_LOOK: list[int] = []


class GenerationStalled(RuntimeError):
    """One step of the generation loop has run longer than the stall limit: a hung device."""

    def __init__(self, stalled_s: float, limit_s: float) -> None:
        super().__init__(f"one generation step has run for {stalled_s:.0f} s (limit {limit_s:g} s)")
        self.stalled_s = stalled_s


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
        decode: str = "eager",
        static_max_tokens: int = 2048,
        stall_s: float = 0.0,
        autostart: bool = True,
    ) -> None:
        """``decode``: ``eager``, ``static``, ``graph`` or ``auto`` (see ``resolve_decode``);
        the static paths allocate their KV cache, and capture their graphs, here.
        ``stall_s``: a job waiting on a step older than this raises GenerationStalled (0: off).
        """
        self.stall_s = stall_s
        # When the step in progress began (None between steps and while idle): a forward pass
        # stuck in the device never returns, so only its age can tell.
        self._step_since: float | None = None
        self._tokenizer = tokenizer
        self._device = next(model.parameters()).device
        call = ModelCall(model)
        self.max_batch_size = max_batch_size
        self._eos = frozenset(eos_token_ids)
        self._batch_wait = batch_wait_ms / 1000.0
        self._queue: queue.SimpleQueue[Row | None] = queue.SimpleQueue()
        self._eager = EagerLane(call, pad_token_id=pad_token_id, device=self._device)
        # The path actually run, and why it is not the one asked for (None when it is).
        self.decode: Decode
        self.decode, self.decode_note = resolve_decode(
            decode, device_type=self._device.type, config=model.config
        )
        self._static: StaticLane | None = None
        if self.decode != "eager":
            self._static = StaticLane(
                model,
                slots=max_batch_size,
                max_tokens=static_max_tokens,
                pad_token_id=pad_token_id,
                capture=self.decode == "graph",
            )
        self._lanes: list[Lane] = (
            [self._eager] if self._static is None else [self._static, self._eager]
        )
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

    @property
    def static_report(self) -> StaticReport | None:
        """What the static lane allocated and captured; None on the eager path."""
        return None if self._static is None else self._static.report

    @property
    def active(self) -> int:
        """Rows in the lanes now: the batch slots taken (read from any thread, for tests)."""
        return self._live()

    def _enqueue(
        self, request: GenerationRequest, on_step: Callable[[list[int]], None] | None = None
    ) -> Row:
        if self._dead is not None:
            raise RuntimeError("the generation thread has stopped") from self._dead
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        future: concurrent.futures.Future[GenerationResult] = concurrent.futures.Future()
        row = Row(request, future, time.perf_counter(), seed, on_step=on_step)
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
        future = asyncio.wrap_future(row.future)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=self._stall_check_s())
                if done:
                    return future.result()
                self._raise_if_stalled(row)
        except asyncio.CancelledError:
            # The thread drops the row at its next step instead of decoding for nobody.
            row.cancelled = True
            raise

    async def stream(
        self, request: GenerationRequest, *, announced: bool = False
    ) -> AsyncGenerator[list[int] | GenerationResult, None]:
        """Submit a job; yield the token ids each step adds to it, as the step ends (the
        steps since the last yield, when the consumer was busy), then its result (or raise
        what ended it). ``announced`` as for :meth:`generate`.

        Leaving early (the task cancelled, the consumer gone: ``aclose``) drops the row at the
        loop's next step, so its batch slot frees at once.
        """
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[list[int] | None] = asyncio.Queue()

        def hand_over(ids: list[int] | None) -> None:
            # Runs in the generation thread; the queue belongs to the event loop.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading
                loop.call_soon_threadsafe(steps.put_nowait, ids)

        row = self._enqueue(request, on_step=hand_over)
        # After the last step's ids: both are handed over from the generation thread, in order.
        row.future.add_done_callback(lambda _: hand_over(None))
        if announced:
            self.expected -= 1
        # The stall check comes as a marker in the queue from a timer, rather than as a
        # timeout on every get: that would cost a task per step.
        interval = self._stall_check_s()
        timer: asyncio.TimerHandle | None = None

        def look() -> None:
            nonlocal timer
            steps.put_nowait(_LOOK)
            timer = loop.call_later(interval or 0.0, look)

        if interval is not None:
            timer = loop.call_later(interval, look)
        finished = False
        try:
            while True:
                ids = await steps.get()
                # Steps that came while the consumer was busy go out together: they are late
                # already, and one hand-over each would only make them later.
                new: list[int] = []
                while ids is not None:
                    if ids is _LOOK:
                        self._raise_if_stalled(row)
                    else:
                        new.extend(ids)
                    if steps.empty():
                        break
                    ids = steps.get_nowait()
                if new:
                    yield new
                if ids is None:
                    finished = True
                    yield row.future.result()
                    return
        finally:
            if timer is not None:
                timer.cancel()
            if not finished:
                row.cancelled = True

    def _stall_check_s(self) -> float | None:
        return None if self.stall_s <= 0 else min(_STALL_CHECK_S, self.stall_s / 2)

    def _raise_if_stalled(self, row: Row) -> None:
        stalled = self.stalled_for()
        if self.stall_s > 0 and stalled > self.stall_s:
            row.cancelled = True
            raise GenerationStalled(stalled, self.stall_s)

    def stalled_for(self) -> float:
        """How long the step in progress has run (0 between steps and while idle)."""
        since = self._step_since
        return 0.0 if since is None else time.monotonic() - since

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
            self._step_since = time.monotonic()
            try:
                if fresh:
                    for lane, rows in self._route(fresh):
                        logits = lane.prefill(rows)
                        self._counted(lane)
                        self.stats.prefill_calls += 1
                        self.stats.jobs += len(rows)
                        self._choose(rows, logits)
                else:
                    for lane in self._lanes:
                        if lane.rows:
                            logits = lane.decode()
                            self._counted(lane)
                            if lane is self._static:
                                self.stats.static_steps += 1
                            self._choose(lane.rows, logits)
                self._retire()
            except Exception as exc:  # every job in flight must hear of it
                self._fail_all(fresh, exc)
            finally:
                self._step_since = None

    def _drain(self, exc: BaseException) -> None:
        while True:
            try:
                row = self._queue.get_nowait()
            except queue.Empty:
                return
            if row is not None:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    row.future.set_exception(exc)

    def _live(self) -> int:
        return sum(len(lane.rows) for lane in self._lanes)

    def _admit(self) -> list[Row] | None:
        """Rows to prefill this step (maybe none); None when the generator is closing."""
        room = self.max_batch_size - self._live()
        fresh: list[Row] = []
        if room <= 0:
            return fresh
        if not self._live():
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

    def _route(self, fresh: list[Row]) -> list[tuple[Lane, list[Row]]]:
        """Fresh rows by lane: the static lane takes every job that fits its slots."""
        static = self._static
        if static is None:
            return [(self._eager, fresh)]
        fits = [r for r in fresh if static.fits(r.request)]
        longer = [r for r in fresh if not static.fits(r.request)]
        self.stats.eager_fallbacks += len(longer)
        return [(lane, rows) for lane, rows in ((static, fits), (self._eager, longer)) if rows]

    def _counted(self, lane: Lane) -> None:
        """Book one forward pass of ``lane``: counters, each row's batch size, the test hook."""
        self.stats.forward_calls += 1
        size = len(lane.rows)
        self.stats.max_batch_size = max(self.stats.max_batch_size, size)
        for row in lane.rows:
            row.batch_size = max(row.batch_size, size)
        if self.step_hook is not None:
            self.step_hook(size)

    def _choose(self, rows: list[Row], logits: torch.Tensor) -> None:
        greedy = logits.argmax(dim=-1).tolist()
        now = time.perf_counter()
        for row, logit_row, argmax in zip(rows, logits, greedy, strict=True):
            if not row.first_token:
                row.first_token = now
            request = row.request
            token = argmax
            if request.temperature > 0:
                token = sample(logit_row, request.temperature, request.top_p, row.generator)
            if token in self._eos:
                row.finish_reason = FINISH_STOP
                continue
            row.tokens.append(token)
            if row.on_step is not None:
                row.on_step([token])
            if request.stop and self._hit_stop(row):
                row.finish_reason = FINISH_STOP
            elif len(row.tokens) >= request.max_new_tokens:
                row.finish_reason = FINISH_LENGTH

    def _hit_stop(self, row: Row) -> bool:
        # A stop string of b bytes spans at most b + 1 byte-level tokens; decoding only that
        # tail keeps the check O(1) per step.
        span = max(len(s.encode()) for s in row.request.stop) + 2
        tail = self._tokenizer.decode(row.tokens[-span:], skip_special_tokens=True)
        return any(s in tail for s in row.request.stop)

    def _retire(self) -> None:
        for lane in self._lanes:
            keep: list[int] = []
            for i, row in enumerate(lane.rows):
                if row.finish_reason is not None:
                    self._resolve(row)
                elif not row.cancelled:
                    keep.append(i)
            lane.keep(keep)

    def _resolve(self, row: Row) -> None:
        text = self._tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = [i for i in (text.find(s) for s in row.request.stop) if i >= 0]
        if cut:
            text = text[: min(cut)]
        now = time.perf_counter()
        # The first token's perf_counter reading in wall-clock time, read once per job here
        # rather than once per step in _choose.
        wall_now = time.time()
        result = GenerationResult(
            token_ids=list(row.tokens),
            text=text,
            finish_reason=row.finish_reason or FINISH_STOP,
            seed=row.seed,
            queue_ms=(row.started - row.enqueued) * 1000.0,
            generate_ms=(now - row.started) * 1000.0,
            batch_size=row.batch_size,
            first_token_ms=(row.first_token - row.enqueued) * 1000.0,
            first_token_at=wall_now - (now - row.first_token),
        )
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            row.future.set_result(result)

    def _fail_all(self, fresh: list[Row], exc: BaseException) -> None:
        rows = {id(r): r for lane in self._lanes for r in [*lane.rows, *fresh]}
        for lane in self._lanes:
            lane.clear()
        for row in rows.values():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                row.future.set_exception(exc)
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
