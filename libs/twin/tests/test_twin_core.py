"""The twin's pure core with a fake clock: job life cycle, retention, limits, scaling."""

from __future__ import annotations

import asyncio

import pytest

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.twin._jobs import JobQueue, JobStatus, Policy
from podpulse.twin._scaler import Snapshot, workers_to_add
from podpulse.twin._workers import (
    Liveness,
    WorkerRecord,
    WorkerState,
    _describe_exit,
    _silence,
)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_timing_fields_follow_the_clock() -> None:
    """delayTime is queue-to-take and executionTime take-to-result, in whole ms."""
    clock = Clock()
    queue = JobQueue(clock)
    job = queue.submit({"q": 1}, Policy(), sync=False)
    assert job.to_json() == {"id": job.id, "status": "IN_QUEUE"}
    clock.now += 0.2504
    taken = await queue.take("w1", 1, hold_s=0.01)
    assert taken == [job]
    assert job.to_json() == {"id": job.id, "status": "IN_PROGRESS", "delayTime": 250,
                             "workerId": "w1"}  # fmt: skip
    clock.now += 1.5
    queue.complete(job, {"text": "ok"}, None)
    assert job.to_json() == {
        "id": job.id,
        "status": "COMPLETED",
        "delayTime": 250,
        "executionTime": 1500,
        "workerId": "w1",
        "output": {"text": "ok"},
    }
    assert queue.counters.completed == 1


async def test_results_are_kept_one_minute_for_runsync_and_thirty_for_run() -> None:
    """Finished jobs are forgotten after RunPod's retention: 60 s sync, 30 min async."""
    clock = Clock()
    queue = JobQueue(clock)
    sync_job = queue.submit({}, Policy(), sync=True)
    async_job = queue.submit({}, Policy(), sync=False)
    await queue.take("w1", 2, hold_s=0.01)
    queue.complete(sync_job, 1, None)
    queue.complete(async_job, 2, None)
    clock.now += 61
    queue.expire()
    assert sync_job.id not in queue.jobs
    assert async_job.id in queue.jobs
    clock.now += 30 * 60
    queue.expire()
    assert async_job.id not in queue.jobs


async def test_execution_timeout_and_ttl_end_jobs_as_timed_out() -> None:
    """A running job past executionTimeout and a queued one past ttl both TIME OUT."""
    clock = Clock()
    queue = JobQueue(clock)
    running = queue.submit({}, Policy(execution_timeout_ms=1000), sync=False)
    await queue.take("w1", 1, hold_s=0.01)
    waiting = queue.submit({}, Policy(ttl_ms=500), sync=False)
    clock.now += 0.6
    assert queue.expire() == []
    assert waiting.status is JobStatus.TIMED_OUT
    assert "ttl" in (waiting.error or "")
    clock.now += 0.5
    assert queue.expire() == [running]
    assert running.status is JobStatus.TIMED_OUT
    assert running.to_json()["executionTime"] == 1100
    # A late result from the worker does not resurrect it.
    queue.complete(running, "late", None)
    assert running.status is JobStatus.TIMED_OUT
    assert queue.counters.failed == 2


async def test_low_priority_jobs_wait_behind_normal_ones() -> None:
    """policy.lowPriority jobs are taken only when no normal job waits."""
    queue = JobQueue(Clock())
    low = queue.submit({}, Policy(low_priority=True), sync=False)
    normal = queue.submit({}, Policy(), sync=False)
    assert await queue.take("w1", 1, hold_s=0.01) == [normal]
    assert await queue.take("w1", 1, hold_s=0.01) == [low]


async def test_a_parked_take_gets_the_next_job_and_an_empty_hold_gets_nothing() -> None:
    """A long-polling worker is handed a new job at once; with none it hears nothing."""
    queue = JobQueue(Clock())
    assert await queue.take("w1", 1, hold_s=0.01) == []
    waiter = asyncio.ensure_future(queue.take("w1", 3, hold_s=5))
    await asyncio.sleep(0)
    assert queue.waiting_takers() == 1
    job = queue.submit({}, Policy(), sync=False)
    assert await waiter == [job]
    assert queue.waiting_takers() == 0


async def test_routing_runs_from_job_queued_and_worker_free_not_from_the_ask() -> None:
    """The platform's routing (0.7 s here) overlaps the SDK's pause after a job: a job queued
    while its worker was busy is routed from the worker's job-done, one queued after from its
    own arrival, one for a worker that was already waiting from its arrival too."""
    clock = Clock()
    queue = JobQueue(clock)
    routing = 0.7
    first = queue.submit({}, Policy(), sync=False)
    assert await queue.take("w1", 1, hold_s=0.01) == [first]
    assert queue.routing_left_s([first], routing) == pytest.approx(routing)  # a new worker
    waiting = queue.submit({}, Policy(), sync=False)  # queued behind the busy worker
    clock.now += 2.8
    queue.complete(first, {}, None)  # w1 free at t=2.8
    clock.now += 0.2  # the SDK's pause: w1 asks again at t=3.0
    assert await queue.take("w1", 1, hold_s=0.01) == [waiting]
    assert queue.routing_left_s([waiting], routing) == pytest.approx(0.5)
    clock.now += 2.8
    queue.complete(waiting, {}, None)  # free at t=5.8
    clock.now += 0.1
    late = queue.submit({}, Policy(), sync=False)  # queued at t=5.9, after w1 was free
    clock.now += 0.1
    assert await queue.take("w1", 1, hold_s=0.01) == [late]
    assert queue.routing_left_s([late], routing) == pytest.approx(0.6)
    clock.now += 5.0  # long past: the routing is over, nothing left to wait
    assert queue.routing_left_s([late], routing) == 0.0
    parked = asyncio.ensure_future(queue.take("w2", 1, hold_s=5))
    await asyncio.sleep(0)
    arrived = queue.submit({}, Policy(), sync=False)
    assert await parked == [arrived]
    assert queue.routing_left_s([arrived], routing) == pytest.approx(routing)


def _config(kind: ScalerType, value: float, lo: int = 0, hi: int = 5) -> EndpointConfig:
    return EndpointConfig(
        workers_min=lo, workers_max=hi, idle_timeout_s=5, scaler_type=kind, scaler_value=value
    )


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (Snapshot(active=0, initializing=0, queued=0, in_progress=0, oldest_wait_s=0), 0),
        (Snapshot(active=1, initializing=0, queued=3, in_progress=1, oldest_wait_s=0.9), 0),
        (Snapshot(active=1, initializing=0, queued=3, in_progress=1, oldest_wait_s=1.1), 1),
        # A worker already starting covers one waiting request.
        (Snapshot(active=2, initializing=1, queued=1, in_progress=1, oldest_wait_s=5), 0),
        (Snapshot(active=5, initializing=0, queued=9, in_progress=5, oldest_wait_s=9), 0),
    ],
)
def test_queue_delay_adds_a_worker_when_a_request_waits_too_long(
    snapshot: Snapshot, expected: int
) -> None:
    """QUEUE_DELAY starts one worker once the oldest request waited past queueDelay."""
    assert workers_to_add(_config(ScalerType.QUEUE_DELAY, 1), snapshot) == expected


def test_request_count_sizes_the_pool_to_the_work() -> None:
    """REQUEST_COUNT: workers = ceil((inQueue + inProgress) / requestCount), within bounds."""
    config = _config(ScalerType.REQUEST_COUNT, 2, lo=1, hi=4)
    idle = Snapshot(active=0, initializing=0, queued=0, in_progress=0, oldest_wait_s=0)
    assert workers_to_add(config, idle) == 1  # workersMin
    busy = Snapshot(active=1, initializing=0, queued=4, in_progress=1, oldest_wait_s=0)
    assert workers_to_add(config, busy) == 2  # ceil(5 / 2) = 3 workers
    flood = Snapshot(active=1, initializing=0, queued=40, in_progress=1, oldest_wait_s=0)
    assert workers_to_add(config, flood) == 3  # capped by workersMax


def test_a_worker_exit_is_described_by_code_or_signal_even_an_unnamed_one() -> None:
    """Exit codes, named signals, and signals Python has no name for all read clearly."""
    assert _describe_exit(17) == "worker process exited with code 17"
    assert _describe_exit(-9) == "worker process was killed by SIGKILL"
    assert _describe_exit(-200) == "worker process was killed by signal 200"


def test_a_busy_worker_that_pings_while_its_job_loop_is_silent_is_frozen() -> None:
    """Pings keep an idle worker alive; a busy one whose job loop made no call (nor was handed
    a job) for the heartbeat timeout while pings kept coming is dead, named as frozen; pings
    that stop too are missed heartbeats."""
    liveness = Liveness(heartbeat_timeout_s=3, start_timeout_s=60)
    record = WorkerRecord(id="w1", state=WorkerState.READY, spawned_at=0.0, called_in=0.0,
                          last_loop_call=10.0, last_ping=14.0)  # fmt: skip
    assert _silence(record, liveness, now=14.5) is None
    frozen = _silence(record, liveness, now=14.5, busy_since=9.0)
    assert frozen is not None
    assert "job loop was silent for 3 s mid-job while its heartbeat went on" in frozen
    # Handed a job 2.5 s before its last ping, or a call 2.5 s before it: alive.
    assert _silence(record, liveness, now=14.5, busy_since=11.5) is None
    record.last_loop_call = 11.5
    assert _silence(record, liveness, now=14.5, busy_since=9.0) is None
    # Its heartbeat silent as well: the older rule, and its reason.
    assert _silence(record, liveness, now=17.5, busy_since=9.0) == "missed heartbeats for 3 s"
