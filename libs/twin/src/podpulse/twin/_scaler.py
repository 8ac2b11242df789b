"""Scaling decisions, as RunPod's two scaler types make them. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from podpulse.common.runpod import EndpointConfig

__all__ = ["MAX_STARTS_PER_TICK", "Snapshot", "workers_to_add"]

# Starting a worker forks a process on the control loop, and each one then spends a second or
# so of CPU importing the runpod SDK. A PATCH to workersMin 1000 would otherwise fork them all
# in one tick, stalling every HTTP answer behind it and the machine behind that; a few per
# tick (20 ticks a second by default) still reaches any workersMax in seconds.
MAX_STARTS_PER_TICK = 4


@dataclass(frozen=True)
class Snapshot:
    """What the scaler sees at one tick."""

    active: int  # workers not stopping (initializing or ready)
    initializing: int
    queued: int
    in_progress: int
    oldest_wait_s: float


def workers_to_add(config: EndpointConfig, now: Snapshot) -> int:
    """How many workers to start now: never more than workersMax allows, nor more than
    MAX_STARTS_PER_TICK at once.

    QUEUE_DELAY: start another worker when a request has waited longer than queueDelay
    seconds, one per waiting request not already covered by a worker that is starting.
    REQUEST_COUNT: workers = ceil((inQueue + inProgress) / requestCount).
    Both keep at least workersMin; scaling down is by idle timeout, elsewhere.
    """
    room = config.workers_max - now.active
    if room <= 0:
        return 0
    want = max(0, config.workers_min - now.active)
    if config.scaler_type == "REQUEST_COUNT":
        needed = math.ceil((now.queued + now.in_progress) / config.scaler_value)
        want = max(want, needed - now.active)
    elif now.queued > now.initializing and now.oldest_wait_s > config.scaler_value:
        want = max(want, 1)
    return min(want, room, MAX_STARTS_PER_TICK)
