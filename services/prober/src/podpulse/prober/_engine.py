"""The load engine: closed- and open-loop request schedules against one RunPod endpoint.

Coordinated omission. Every request has an *intended* start, and its total runs from there:

* closed loop: ``concurrency`` slots, each sending its next request when its previous one
  finished, so a slot's next intended start is its previous request's done time;
* open loop: arrivals at a constant or Poisson rate from a fixed schedule. A request that
  leaves late (a saturated event loop, or the in-flight cap) keeps its scheduled intended
  start, so the lateness is counted in its total and shows as schedule lag.

Request style (``RequestOptions.api``). ``runsync`` (the default): each request is one
``POST /runsync?wait=`` and, only if that comes back unfinished (the wait ran out, or hosted
RunPod returned early), ``GET /status`` every ``poll_interval_s``. /runsync answers the
moment the job finishes, so total is measured to within one loopback/network round trip,
with no polling quantisation; the runpod SDK's own ``run_sync`` polls once a second (and
drops delayTime/executionTime), which would quantise every total to 1 s steps. Polling at
50 ms bounds the error of the rare long job to 50 ms. ``stream`` (``/run`` + ``/stream`` +
``/status``) and ``openai`` (RunPod's OpenAI route, server-sent events) read the answer as it
is made and record TTFT, ITL and TPOT (podpulse.prober._streaming says how each is counted).

429. The RunPod client is built with ``max_retries=0``: its own retries would sleep out of
sight and hide the 429s. Here each 429 is counted on the request (``rate_limited``), the slot
backs off (Retry-After when given, else jittered exponential: podpulse.common.retry), and the
call is sent again; its total still runs from the intended start, so the back-off is paid for
in the latency a user would see. A request's 429s share one budget across its /runsync and
/status calls: after ``rate_limit_retries`` of them it ends as RATE_LIMITED.

An endpoint that is not there (connection refused, HTTP 5xx): see podpulse.prober._stop. The
request ends as HTTP_ERROR and is reported; a closed-loop or warm-up slot then backs off
(same Backoff) before its next request, whose intended start is when the pause ended -- the
slot chose to wait, the endpoint did not make it. An open loop keeps its schedule (its rate
bounds it). The stop rule may then end the run with ``RunAborted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.retry import Retry
from podpulse.common.runpod import (
    Job,
    JobStatus,
    RunPodClient,
    RunPodError,
    RunPodRateLimited,
    RunPodTimeout,
    whole_output,
)

from ._load import Clock, EngineResult, Load, RequestOptions, arrivals
from ._stop import RunAborted, StopRule, Streak, unreachable
from ._streaming import Streamed, chat_body, count_of, read_openai, read_stream

__all__ = ["Engine"]

T = TypeVar("T")

_REASON_CHARS = 300
# How long cancelling in-flight jobs may take after Ctrl-C, so an interrupt stays prompt.
_CANCEL_GRACE_S = 2.0


class Engine:
    """Sends one run's requests and reports each as it finishes.

    ``make_input(seq)`` gives the job input of request ``seq``; ``on_record`` is called once
    per measured request, in completion order (warm-up requests are not reported).
    """

    def __init__(
        self,
        client: RunPodClient,
        *,
        run_id: str,
        make_input: Callable[[int], Any],
        options: RequestOptions | None = None,
        on_record: Callable[[RequestRecord], None] | None = None,
        concurrency_label: int | None = None,
        shard: int = 0,
        clock: Clock | None = None,
        stop_rule: StopRule | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.make_input = make_input
        self.options = options or RequestOptions()
        self.on_record = on_record
        self.concurrency_label = concurrency_label
        self.shard = shard
        self.clock = clock or Clock()
        self.streak = Streak(stop_rule or StopRule())
        self.started_at: float | None = None  # when the measured part began (epoch s)
        self._in_flight: set[str] = set()
        # Strong references to fire-and-forget cancels, which asyncio would otherwise drop.
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, load: Load, *, start_at: float | None = None) -> EngineResult:
        """Warm up, then send the measured requests; returns when all have finished.

        ``start_at`` (epoch s) delays the measured part until then, so shards start together,
        and is its origin: an open-loop schedule (and a duration) counts from ``start_at``
        even when warm-up ran past it, so a late shard's delay shows as schedule lag and in
        every total instead of shifting its schedule out of sight. On cancellation (Ctrl-C)
        the jobs still in flight are cancelled on the endpoint, best effort, and the
        cancellation propagates; reported records are already written. When the stop rule
        ends the run, in-flight jobs are cancelled the same way and ``RunAborted`` propagates.
        """
        result = EngineResult(records=[], warmup_records=[])
        label = self.concurrency_label or load.concurrency
        try:
            if load.warmup:
                await self._warmup(load, label, result)
            if start_at is not None:
                await self.clock.sleep_until(start_at)
            result.started_at = self.started_at = self.clock.now() if start_at is None else start_at
            if load.arrival == "closed":
                await self._closed(load, label, result)
            else:
                await self._open(load, label, result)
        except asyncio.CancelledError:
            await self._cancel_in_flight()
            raise
        except BaseExceptionGroup as group:
            # A slot's RunAborted comes out of its TaskGroup wrapped; the others were cancelled.
            aborted = _first_abort(group)
            if aborted is None:
                raise
            await self._cancel_in_flight()
            raise aborted from None
        return result

    async def _warmup(self, load: Load, label: int, result: EngineResult) -> None:
        counter = itertools.count()
        slots = max(1, min(load.warmup, load.concurrency or 1))

        async def slot() -> None:
            failures = 0
            while (n := next(counter)) < load.warmup:
                record, failed = await self._measure(-1 - n, self.clock.now(), label)
                result.warmup_records.append(record)
                failures = await self._after(record, failed, failures)

        async with asyncio.TaskGroup() as group:
            for _ in range(slots):
                group.create_task(slot())

    async def _closed(self, load: Load, label: int, result: EngineResult) -> None:
        assert result.started_at is not None
        deadline = None if load.duration_s is None else result.started_at + load.duration_s
        seqs = itertools.count(load.index, load.step)
        issued = itertools.count()

        def next_seq(intended: float) -> int | None:
            if deadline is not None and intended >= deadline:
                return None
            if load.runs is not None and next(issued) >= load.runs:
                return None
            return next(seqs)

        async def slot() -> None:
            intended, failures = self.clock.now(), 0
            while (seq := next_seq(intended)) is not None:
                record, failed = await self._measure(seq, intended, label)
                self._report(record, result)
                failures = await self._after(record, failed, failures, until=deadline)
                # The slot's next request was due when this one ended, or its back-off did.
                intended = self.clock.now() if failures else record.done

        async with asyncio.TaskGroup() as group:
            for _ in range(load.concurrency):
                group.create_task(slot())

    async def _open(self, load: Load, label: int, result: EngineResult) -> None:
        assert result.started_at is not None
        # A little lead so the first arrival is not already late when the loop gets to it.
        start = result.started_at + 0.005
        cap = asyncio.Semaphore(load.concurrency) if load.concurrency > 0 else None

        async def one(seq: int, intended: float) -> None:
            if cap is None:
                record, failed = await self._measure(seq, intended, label)
            else:
                async with cap:  # waiting here is lateness; the intended start stays put
                    record, failed = await self._measure(seq, intended, label)
            self._report(record, result)
            self._count(record, failed)

        async with asyncio.TaskGroup() as group:
            for sent, (seq, offset) in enumerate(arrivals(load)):
                if load.runs is not None and sent >= load.runs:
                    break
                if load.duration_s is not None and offset >= load.duration_s:
                    break
                await self.clock.sleep_until(start + offset)
                group.create_task(one(seq, start + offset))

    def _report(self, record: RequestRecord, result: EngineResult) -> None:
        result.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def _count(self, record: RequestRecord, failed: bool) -> None:
        """Feed the stop rule (RunAborted when it ends the run)."""
        if failed:
            self.streak.failed(sent=record.sent, done=record.done, error=record.error)
        else:
            self.streak.passed()

    async def _after(
        self, record: RequestRecord, failed: bool, failures: int, *, until: float | None = None
    ) -> int:
        """A slot's bookkeeping after a request: the stop rule, then its back-off (never past
        the run's deadline ``until``); returns the slot's failures in a row."""
        self._count(record, failed)
        if not failed:
            return 0
        backoff = self.options.backoff
        wait = backoff.delay(failures)
        if until is not None:
            wait = min(wait, max(0.0, until - self.clock.now()))
        await backoff.sleep(wait)
        return failures + 1

    async def request(self, seq: int, intended: float, label: int) -> RequestRecord:
        """Send request ``seq`` due at ``intended``; never raises for a failed request."""
        record, _ = await self._measure(seq, intended, label)
        return record

    async def _measure(self, seq: int, intended: float, label: int) -> tuple[RequestRecord, bool]:
        """The request's record, and whether it failed for want of a reachable endpoint."""
        state = _Attempt()
        failed = False
        sent = self.clock.now()
        outcome, error = Outcome.OK, None
        try:
            async with asyncio.timeout(self.options.timeout_s):
                outcome, error = await self._until_final(self.make_input(seq), state)
        except TimeoutError:
            outcome = Outcome.CLIENT_TIMEOUT
            error = f"no final status within the client timeout ({self.options.timeout_s:g} s)"
            if state.job is not None:
                self._cancel_later(state.job.id)
        except RunPodRateLimited as exc:
            outcome, error = Outcome.RATE_LIMITED, _short(str(exc))
        except RunPodTimeout as exc:
            outcome, error = Outcome.CLIENT_TIMEOUT, _short(str(exc))
        except RunPodError as exc:
            outcome, error = Outcome.HTTP_ERROR, _short(str(exc))
            failed = unreachable(exc)
        done = self.clock.now()
        job, streamed = state.job, state.streamed
        usage, model = _usage(job.output) if job is not None else ({}, None)
        if streamed is not None:
            # The streamed read's own counts (the OpenAI route has no job at all).
            if streamed.input_tokens is not None:
                usage["input_tokens"] = streamed.input_tokens
            if streamed.output_tokens is not None:
                usage["output_tokens"] = streamed.output_tokens
            model = streamed.model or model
            if (
                self.options.api == "stream"
                and "output_tokens" not in usage
                and streamed.times.tokens
            ):
                # No usage in the answer: what the chunks themselves counted.
                usage["output_tokens"] = streamed.times.tokens
        output_tokens = usage.get("output_tokens")
        times = streamed.times if streamed is not None else None
        record = RequestRecord(
            run_id=self.run_id,
            seq=seq,
            concurrency=label,
            intended=intended,
            sent=sent,
            done=done,
            outcome=outcome,
            job_id=job.id if job else None,
            status=job.status.value if job else None,
            worker_id=job.worker_id if job else None,
            delay_ms=job.delay_time_ms if job else None,
            exec_ms=job.execution_time_ms if job else None,
            input_tokens=usage.get("input_tokens"),
            output_tokens=output_tokens,
            error=error,
            shard=self.shard,
            rate_limited=state.rate_limited,
            model=model,
            api=self.options.api,
            ttft_ms=None if times is None else times.ttft_ms(intended),
            tpot_ms=None if times is None else times.tpot_ms(output_tokens),
            itl_ms=() if times is None else times.itl_ms(),
        )
        return record, failed

    async def _until_final(self, job_input: Any, state: _Attempt) -> tuple[Outcome, str | None]:
        """Send the request the run's API asks for; how it ended."""
        options = self.options
        if options.api == "openai":
            body = chat_body(job_input, options.model)
            complete = await self._call(
                lambda: read_openai(self.client, body, now=self.clock.now, streamed=_reset(state)),
                state,
            )
            streamed = state.streamed
            assert streamed is not None
            if streamed.error is not None:
                return Outcome.FAILED, _short(streamed.error)
            if not complete:
                return Outcome.FAILED, "the event stream ended without data: [DONE]"
            return Outcome.OK, None
        try:
            if options.api == "stream":
                state.streamed = Streamed()
                final = await read_stream(
                    self.client,
                    job_input,
                    now=self.clock.now,
                    call=lambda send: self._call(send, state),
                    on_job=lambda job: self._track(job, state),
                    poll_interval_s=options.poll_interval_s,
                    streamed=state.streamed,
                    policy=options.policy,
                )
                return _outcome(final)
            wait_ms = options.runsync_wait_ms()
            self._track(
                await self._call(
                    lambda: self.client.runsync(job_input, wait_ms=wait_ms, policy=options.policy),
                    state,
                ),
                state,
            )
            assert state.job is not None
            job_id = state.job.id
            while not state.job.status.is_final:
                await asyncio.sleep(options.poll_interval_s)
                state.job = await self._call(lambda: self.client.status(job_id), state)
            return _outcome(state.job)
        finally:
            if state.job is not None:
                self._in_flight.discard(state.job.id)

    def _track(self, job: Job, state: _Attempt) -> None:
        """The request's job as last seen, kept in flight (to cancel) until it is final."""
        state.job = job
        self._in_flight.add(job.id)

    async def _call(self, send: Callable[[], Awaitable[T]], state: _Attempt) -> T:
        """``send()``, backing off from 429s; a request's 429s share one retry budget."""

        async def counted() -> T:
            try:
                return await send()
            except RunPodRateLimited:
                state.rate_limited += 1
                raise

        backoff = self.options.backoff
        retry = Retry.backoff(
            backoff,
            retries=max(0, self.options.rate_limit_retries - state.rate_limited),
            on=(RunPodRateLimited,),
            retry_after=_asked_wait,
        )
        return await retry.acall(counted, sleep=backoff.sleep)

    def _cancel_later(self, job_id: str) -> None:
        # The job would go on occupying a worker after we stopped waiting for it.
        task = asyncio.get_running_loop().create_task(self._cancel(job_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, job_id: str) -> None:
        with contextlib.suppress(RunPodError, TimeoutError):
            async with asyncio.timeout(_CANCEL_GRACE_S):
                await self.client.cancel(job_id)

    async def _cancel_in_flight(self) -> None:
        if self._in_flight:
            await asyncio.gather(*(self._cancel(job_id) for job_id in list(self._in_flight)))


def _first_abort(group: BaseExceptionGroup[BaseException]) -> RunAborted | None:
    for error in group.exceptions:
        if isinstance(error, RunAborted):
            return error
        if isinstance(error, BaseExceptionGroup) and (inner := _first_abort(error)):
            return inner
    return None


def _asked_wait(error: BaseException) -> float | None:
    return error.retry_after_s if isinstance(error, RunPodRateLimited) else None


@dataclass
class _Attempt:
    job: Job | None = None
    rate_limited: int = 0
    streamed: Streamed | None = None  # set when the answer is read as a stream


def _reset(state: _Attempt) -> Streamed:
    # A retried OpenAI request (after a 429) starts its reading afresh.
    state.streamed = Streamed()
    return state.streamed


def _outcome(job: Job) -> tuple[Outcome, str | None]:
    match job.status:
        case JobStatus.COMPLETED:
            return Outcome.OK, None
        case JobStatus.TIMED_OUT:
            return Outcome.TIMED_OUT, _short(_text(job.error) or "TIMED_OUT")
        case JobStatus.CANCELLED:
            return Outcome.CANCELLED, _short(_text(job.error) or "CANCELLED")
        case _:
            return Outcome.FAILED, _short(_text(job.error) or "FAILED without an error message")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _short(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first[:_REASON_CHARS]


def _usage(output: Any) -> tuple[dict[str, int], str | None]:
    """Token counts and model name from the handler's output, when it reports them; the
    output may be the answer itself or the aggregated list of a generator's yields."""
    output = whole_output(output)
    if output is None:
        return {}, None
    usage = output.get("usage")
    counts = {}
    if isinstance(usage, dict):
        for key in ("input_tokens", "output_tokens"):
            value = count_of(usage.get(key))
            if value is not None:
                counts[key] = value
    model = output.get("model")
    return counts, model if isinstance(model, str) else None
