"""A model of a RunPod serverless endpoint under load: the scaler, cold starts, idle timeouts
and the worker's job loop, replayed as a discrete-event simulation.

Requests arrive as a Poisson stream at the given rate; each one's execution time and client
overhead (total - delay - exec) are drawn from a measured run, so the model's only invented
numbers are the platform's own rules:

- **scaler**, as RunPod documents it and the twin implements it (``podpulse.twin._scaler``),
  checked every ``TICK_S``: QUEUE_DELAY starts one more worker per waiting request not already
  covered by a starting one, once the oldest has waited longer than ``scalerValue`` seconds;
  REQUEST_COUNT keeps ceil((inQueue + inProgress) / ``scalerValue``) workers; both keep
  ``workersMin`` and never exceed ``workersMax``;
- **cold start**: a started worker takes jobs ``cold_start_s`` later; requests still queued
  when it is ready waited for a cold start (``cold_start_waits``);
- **idle timeout**: a worker beyond ``workersMin`` idle for ``idleTimeout`` seconds stops;
- **job loop** (one job at a time per worker): ``fast`` (podpulse's) takes the next job as
  the last ends; ``sdk`` (the runpod 1.12 stock loop) sleeps 1 s whenever it is at its
  concurrency limit, so it looks for the next job only at whole seconds after the last take,
  and adds ~50 ms inside executionTime (its 100 ms poll for taken jobs).

Queued jobs go to the worker that has been idle longest, as the oldest long-polling job-take
request is answered first. Draws come from one seeded stream shared by every configuration,
so two configurations are compared on the same arrivals and execution times.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from podpulse.common.histogram import percentile
from podpulse.common.runpod import EndpointConfig, ScalerType

__all__ = [
    "SDK_EXEC_OVERHEAD_S",
    "SDK_SLEEP_S",
    "TICK_S",
    "JobLoop",
    "Prediction",
    "Workload",
    "simulate",
]

JobLoop = Literal["fast", "sdk"]
TICK_S = 0.05  # the twin's scaler tick (20 a second)
SDK_SLEEP_S = 1.0
SDK_EXEC_OVERHEAD_S = 0.05

_ARRIVAL, _READY, _FREE, _IDLE_CHECK, _TICK = range(5)


@dataclass(frozen=True)
class Workload:
    """The draws every configuration is judged on: arrival times and per-request times."""

    arrivals_s: tuple[float, ...]
    exec_s: tuple[float, ...]
    overhead_s: tuple[float, ...]

    @classmethod
    def draw(
        cls,
        *,
        rate_rps: float,
        requests: int,
        exec_ms: Sequence[float],
        overhead_ms: Sequence[float],
        seed: int,
    ) -> Workload:
        """``requests`` Poisson arrivals at ``rate_rps``, each with an execution time and an
        overhead resampled from the measured ones (no overhead measured: none added)."""
        if not exec_ms:
            raise ValueError("no measured execution times to draw from")
        rng = random.Random(seed)
        now = 0.0
        arrivals = []
        for _ in range(requests):
            now += rng.expovariate(rate_rps)
            arrivals.append(now)
        execs = tuple(rng.choice(exec_ms) / 1000 for _ in range(requests))
        overheads = tuple(
            (rng.choice(overhead_ms) / 1000 if overhead_ms else 0.0) for _ in range(requests)
        )
        return cls(arrivals_s=tuple(arrivals), exec_s=execs, overhead_s=overheads)


@dataclass(frozen=True)
class Prediction:
    """What one configuration does to the workload: latency percentiles (nearest-rank, ms),
    cold starts, and the worker-seconds it bills."""

    config: EndpointConfig
    delay_p50_ms: float
    delay_p95_ms: float
    exec_p50_ms: float
    exec_p95_ms: float
    total_p50_ms: float
    total_p95_ms: float
    cold_starts: int
    cold_start_waits: int  # requests still queued when a new worker's cold start ended
    peak_workers: int
    horizon_s: float
    active_worker_s: float  # the workersMin workers, every second of the horizon
    flex_worker_s: float  # every other worker, from its start to its stop
    events: int  # simulated events processed: a few per request, whatever the rate


@dataclass
class _Worker:
    started_at: float
    state: str = "init"  # init, idle, busy, stopped
    since: float = 0.0  # when it became idle (its idle-check token)
    stopped_at: float | None = None
    ready_order: int = 0


@dataclass
class _Sim:
    config: EndpointConfig
    cold_start_s: float
    job_loop: JobLoop
    events: list[tuple[float, int, int, int]] = field(default_factory=list)
    workers: list[_Worker] = field(default_factory=list)
    queue: deque[int] = field(default_factory=deque)
    idle: deque[int] = field(default_factory=deque)  # longest idle first
    seq: int = 0
    tick_pending: bool = False
    cold_start_waits: int = 0
    cold_waited_upto: int = -1  # the last request counted in cold_start_waits
    # Kept as counts, not by scanning ``workers``: at a low rate nearly every request starts a
    # worker, and a scan per tick made the run quadratic in the requests.
    active: int = 0
    initializing: int = 0
    busy: int = 0

    def push(self, time: float, kind: int, ref: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (time, self.seq, kind, ref))

    def start_worker(self, now: float, *, ready: bool = False) -> None:
        self.workers.append(_Worker(started_at=now))
        self.active += 1
        self.initializing += 1
        wid = len(self.workers) - 1
        if ready:
            self.make_idle(wid, now)
        else:
            self.push(now + self.cold_start_s, _READY, wid)

    def make_idle(self, wid: int, now: float) -> None:
        worker = self.workers[wid]
        if worker.state == "init":
            self.initializing -= 1
        elif worker.state == "busy":
            self.busy -= 1
        worker.state, worker.since = "idle", now
        self.idle.append(wid)
        self.push(now + self.config.idle_timeout_s, _IDLE_CHECK, wid)

    def stop(self, wid: int, now: float) -> None:
        worker = self.workers[wid]
        worker.state, worker.stopped_at = "stopped", now
        self.idle.remove(wid)
        self.active -= 1


def simulate(
    config: EndpointConfig,
    workload: Workload,
    *,
    cold_start_s: float,
    job_loop: JobLoop = "fast",
) -> Prediction:
    """Run ``workload`` against ``config``; workersMin workers are warm at the start."""
    sim = _Sim(config=config, cold_start_s=cold_start_s, job_loop=job_loop)
    for _ in range(config.workers_min):
        sim.start_worker(0.0, ready=True)
    arrivals = workload.arrivals_s
    taken_at = [0.0] * len(arrivals)
    exec_s = [e + (SDK_EXEC_OVERHEAD_S if job_loop == "sdk" else 0.0) for e in workload.exec_s]
    if arrivals:
        sim.push(arrivals[0], _ARRIVAL, 0)
    peak = config.workers_min
    last_done = 0.0
    events = 0
    while sim.events:
        now, _, kind, ref = heapq.heappop(sim.events)
        events += 1
        if kind == _ARRIVAL:
            sim.queue.append(ref)
            if ref + 1 < len(arrivals):
                sim.push(arrivals[ref + 1], _ARRIVAL, ref + 1)
        elif kind in (_READY, _FREE):
            if kind == _READY and sim.queue:
                _count_cold_waits(sim)
            sim.make_idle(ref, now)
        elif kind == _IDLE_CHECK:
            worker = sim.workers[ref]
            stale = worker.state != "idle" or now - worker.since < config.idle_timeout_s - 1e-9
            if not stale and sim.active > config.workers_min:
                sim.stop(ref, now)
        elif kind == _TICK:
            sim.tick_pending = False
            peak = max(peak, _scale(sim, now, arrivals))
        last_done = max(last_done, _dispatch(sim, now, exec_s, taken_at))
        # A tick after a tick only where time alone can change the scaler's answer (a queued
        # request yet to wait its QUEUE_DELAY); otherwise nothing changes before the next
        # event, and ticking through a 45 s cold start would cost 900 events for nothing.
        if sim.queue and not sim.tick_pending and (kind != _TICK or _delay_due(sim, now, arrivals)):
            sim.tick_pending = True
            sim.push(_next_tick(sim, now, arrivals), _TICK, 0)
    horizon = max(last_done, arrivals[-1] if arrivals else 0.0)
    billed = sum(
        (w.stopped_at if w.stopped_at is not None else horizon) - w.started_at for w in sim.workers
    )
    active_s = config.workers_min * horizon
    delays = [(taken_at[i] - arrivals[i]) * 1000 for i in range(len(arrivals))]
    execs = [e * 1000 for e in exec_s]
    totals = [d + e + o * 1000 for d, e, o in zip(delays, execs, workload.overhead_s, strict=True)]
    return Prediction(
        config=config,
        delay_p50_ms=_p(delays, 50),
        delay_p95_ms=_p(delays, 95),
        exec_p50_ms=_p(execs, 50),
        exec_p95_ms=_p(execs, 95),
        total_p50_ms=_p(totals, 50),
        total_p95_ms=_p(totals, 95),
        cold_starts=len(sim.workers) - config.workers_min,
        cold_start_waits=sim.cold_start_waits,
        peak_workers=peak,
        horizon_s=horizon,
        active_worker_s=active_s,
        flex_worker_s=max(0.0, billed - active_s),
        events=events,
    )


def _count_cold_waits(sim: _Sim) -> None:
    """Count, once each, the queued requests a new worker's cold start has just ended for:
    they waited while it started. The queue holds consecutive requests (they arrive in order
    and leave from the front), so the new ones are those after the last counted."""
    first = max(sim.queue[0], sim.cold_waited_upto + 1)
    sim.cold_start_waits += max(0, sim.queue[-1] - first + 1)
    sim.cold_waited_upto = max(sim.cold_waited_upto, sim.queue[-1])


def _dispatch(sim: _Sim, now: float, exec_s: Sequence[float], taken_at: list[float]) -> float:
    """Hand every queued job an idle worker can take now; the latest end among them (0: none)."""
    last = 0.0
    while sim.queue and sim.idle:
        job = sim.queue.popleft()
        wid = sim.idle.popleft()
        sim.workers[wid].state = "busy"
        sim.busy += 1
        taken_at[job] = now
        end = now + exec_s[job]
        last = max(last, end)
        if sim.job_loop == "sdk":
            # At its limit the stock loop sleeps 1 s at a time from the take.
            free = now + math.ceil(exec_s[job] / SDK_SLEEP_S - 1e-9) * SDK_SLEEP_S
        else:
            free = end
        sim.push(free, _FREE, wid)
    return last


def _delay_due(sim: _Sim, now: float, arrivals: Sequence[float]) -> bool:
    """Whether the oldest queued request has yet to wait its QUEUE_DELAY."""
    if sim.config.scaler_type is not ScalerType.QUEUE_DELAY:
        return False
    return now - arrivals[sim.queue[0]] <= float(sim.config.scaler_value)


def _next_tick(sim: _Sim, now: float, arrivals: Sequence[float]) -> float:
    # REQUEST_COUNT reacts at the next tick; QUEUE_DELAY at the first tick after the oldest
    # queued request has waited its delay (nothing can change before that).
    due = now
    if sim.config.scaler_type is ScalerType.QUEUE_DELAY:
        due = max(now, arrivals[sim.queue[0]] + float(sim.config.scaler_value))
    return (math.floor(due / TICK_S + 1e-9) + 1) * TICK_S


def _scale(sim: _Sim, now: float, arrivals: Sequence[float]) -> int:
    """Start what the scaler starts at this tick; the number of active workers after."""
    config = sim.config
    while True:
        active = sim.active
        if active >= config.workers_max:
            return active
        if config.scaler_type is ScalerType.REQUEST_COUNT:
            wanted = math.ceil((len(sim.queue) + sim.busy) / config.scaler_value)
            start = wanted > active
        else:
            waited = now - arrivals[sim.queue[0]] if sim.queue else 0.0
            start = len(sim.queue) > sim.initializing and waited > config.scaler_value
        if not start:
            return active
        sim.start_worker(now)


def _p(values: Sequence[float], q: float) -> float:
    result = percentile(values, q)
    return 0.0 if result is None else result
