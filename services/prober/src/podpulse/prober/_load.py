"""What a run's load looks like: its arrivals, its size, how each request is sent, the clock.

Closed loop: ``concurrency`` slots, each sending its next request when its previous one
finished. Open loop: arrivals at a constant or Poisson rate from a fixed schedule, with an
optional cap on requests in flight. Sharding: shard ``index`` of ``step`` takes arrivals
``index, index + step, ...`` of the one global schedule, so the shards together send exactly
the unsharded schedule.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from podpulse.common.probe_spec import Api, Arrival
from podpulse.common.request_records import RequestRecord
from podpulse.common.runpod import Backoff, JobPolicy

__all__ = ["Clock", "EngineResult", "Load", "RequestOptions", "arrivals"]


class Clock:
    """Epoch seconds from the monotonic perf counter: exact intervals, no NTP steps."""

    def __init__(self) -> None:
        self._epoch0 = time.time()
        self._perf0 = time.perf_counter()

    def now(self) -> float:
        """Current epoch time in seconds."""
        return self._epoch0 + (time.perf_counter() - self._perf0)

    def to_perf(self, epoch: float) -> float:
        """The ``time.perf_counter()`` reading at epoch time ``epoch`` (for benchmarks)."""
        return epoch - self._epoch0 + self._perf0

    async def sleep_until(self, when: float) -> None:
        """Sleep until epoch time ``when`` (returns at once if it has passed)."""
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Load:
    """The shape of the load: arrival process, concurrency, and how long it lasts.

    ``runs`` and ``duration_s`` bound the measured requests; with both, whichever comes
    first ends the run. For the open loop ``concurrency`` caps requests in flight (0: no cap).
    """

    arrival: Arrival = "closed"
    concurrency: int = 1
    runs: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    warmup: int = 0
    seed: int | None = None
    # Sharding: this process takes arrivals index, index + step, ... of the whole schedule.
    index: int = 0
    step: int = 1

    def __post_init__(self) -> None:
        if self.runs is None and self.duration_s is None:
            raise ValueError("a load needs runs, a duration, or both")
        if self.arrival == "closed" and self.concurrency < 1:
            raise ValueError("a closed loop needs concurrency >= 1")
        if self.arrival != "closed" and not (self.rate and self.rate > 0):
            raise ValueError(f"a {self.arrival} arrival needs a rate > 0 (requests/s)")
        if not 0 <= self.index < self.step:
            raise ValueError("shard index must be in [0, step)")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """How each request is sent."""

    timeout_s: float = 120.0
    wait_ms: int = 90_000
    poll_interval_s: float = 0.05
    policy: JobPolicy | None = None
    rate_limit_retries: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    # runsync (whole answers), stream (/run + /stream) or openai (the OpenAI route).
    api: Api = "runsync"
    model: str | None = None  # the OpenAI route's "model", when the endpoint needs one

    def runsync_wait_ms(self) -> int:
        """?wait= for /runsync: at most the timeout, within RunPod's 1 s..5 min."""
        return max(1000, min(self.wait_ms, int(self.timeout_s * 1000) + 1000, 300_000))


@dataclass
class EngineResult:
    """What a run measured."""

    records: list[RequestRecord]
    warmup_records: list[RequestRecord]
    started_at: float | None = None


def arrivals(load: Load) -> Iterator[tuple[int, float]]:
    """This shard's open-loop arrivals as (global index, offset in s from the start)."""
    rate = load.rate or 1.0
    rng = random.Random(load.seed)
    offset = 0.0
    for index in itertools.count():
        if load.arrival == "poisson":
            # Every shard draws the same global sequence and keeps its share, so the union
            # of the shards' schedules is exactly the unsharded schedule.
            offset += rng.expovariate(rate)
        else:
            offset = index / rate
        if index % load.step == load.index:
            yield index, offset
