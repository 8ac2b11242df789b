"""Jobs and the queue: RunPod's job life cycle, timing fields and retention.

Everything here runs on the twin's one event loop, so no locks: state changes are plain
assignments between awaits. Times are ``time.monotonic()`` seconds; RunPod's ``delayTime``
and ``executionTime`` are derived from them in whole milliseconds, as RunPod reports them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from podpulse.common.runpod import JobStatus

__all__ = ["Job", "JobQueue", "JobStatus", "Policy"]

# RunPod keeps /runsync results for a minute and /run results for 30 minutes.
SYNC_RETENTION_S = 60.0
ASYNC_RETENTION_S = 30 * 60.0
# RunPod's defaults: execution timeout 10 minutes; a job expires after 24 hours.
DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 24 * 3600 * 1000


FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})


@dataclass(frozen=True)
class Policy:
    """A request's ``policy`` object: execution timeout and queue TTL in milliseconds."""

    execution_timeout_ms: int = DEFAULT_EXECUTION_TIMEOUT_MS
    ttl_ms: int = DEFAULT_TTL_MS
    low_priority: bool = False


@dataclass(eq=False)
class Job:
    """One request, from the client's POST to its retention running out."""

    id: str
    input: Any
    policy: Policy
    sync: bool
    webhook: str | None = None
    status: JobStatus = JobStatus.IN_QUEUE
    created_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    output: Any = None
    error: str | None = None
    progress: Any = None  # the latest progress update; /status shows it while IN_PROGRESS
    stream: list[Any] = field(default_factory=list)
    stream_read: int = 0  # how many stream chunks /stream has already handed out
    stream_at: list[float] = field(default_factory=list)  # when each stream chunk arrived
    routed_at: float | None = None  # when routing to its worker began: queued and worker free
    retries: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def delay_ms(self) -> int | None:
        """Queue time until a worker took the job, as RunPod's ``delayTime``."""
        if self.started_at is None:
            return None
        return round((self.started_at - self.created_at) * 1000)

    def execution_ms(self) -> int | None:
        """Time from take to result, as RunPod's ``executionTime``."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000)

    def to_json(self) -> dict[str, Any]:
        """The job as RunPod's /status answers it: fields appear as they become known."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if (delay := self.delay_ms()) is not None:
            body["delayTime"] = delay
        if (execution := self.execution_ms()) is not None:
            body["executionTime"] = execution
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.status in FINAL:
            if self.error is not None:
                body["error"] = self.error
            if self.output is not None:
                body["output"] = self.output
        elif self.status is JobStatus.IN_PROGRESS and self.progress is not None:
            body["output"] = self.progress
        return body

    def for_worker(self) -> dict[str, Any]:
        """The job as the SDK's job-take receives it."""
        body: dict[str, Any] = {"id": self.id, "input": self.input}
        if self.webhook:
            body["webhook"] = self.webhook
        return body


@dataclass
class Counters:
    """Totals for /health since the twin started."""

    completed: int = 0
    failed: int = 0
    retried: int = 0


class JobQueue:
    """The endpoint's queue, its jobs by id, and the workers waiting to take one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.jobs: dict[str, Job] = {}
        self._running: dict[str, Job] = {}
        self._next_sweep = 0.0
        self._queued: deque[Job] = deque()
        self._low: deque[Job] = deque()
        # Workers parked in a job-take long-poll: (worker id, wanted count, future).
        self._takers: deque[tuple[str, int, asyncio.Future[list[Job]]]] = deque()
        # When each worker's last running job ended, until it takes the next one.
        self._free_since: dict[str, float] = {}
        self._busy: Counter[str] = Counter()  # running jobs per worker
        self.counters = Counters()
        self._ids = itertools.count(1)
        self.on_queued: Callable[[], None] = lambda: None

    def clock(self) -> float:
        """Now, on the clock the queue's times are read from."""
        return self._clock()

    # --- clients --------------------------------------------------------------------------
    def submit(
        self, job_input: Any, policy: Policy, *, sync: bool, webhook: str | None = None
    ) -> Job:
        """Queue a new job and hand it straight to a waiting worker if there is one."""
        # RunPod ids are a UUID with a region suffix; the shape is what clients key on.
        job_id = f"{uuid.uuid4()}-t{next(self._ids)}"
        job = Job(
            id=job_id,
            input=job_input,
            policy=policy,
            sync=sync,
            webhook=webhook,
            created_at=self._clock(),
        )
        self.jobs[job_id] = job
        self._enqueue(job)
        return job

    def _enqueue(self, job: Job) -> None:
        (self._low if job.policy.low_priority else self._queued).append(job)
        self._dispatch()
        self.on_queued()

    def cancel(self, job: Job) -> list[str]:
        """Cancel a job; returns the worker ids that must be told to stop it."""
        if job.status in FINAL:
            return []
        was_running = job.status is JobStatus.IN_PROGRESS
        self._remove_queued(job)
        self._finish(job, JobStatus.CANCELLED)
        return [job.worker_id] if was_running and job.worker_id else []

    def retry(self, job: Job) -> bool:
        """Queue a failed or timed-out job again under the same id, as RunPod's /retry."""
        if job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            return False
        job.status = JobStatus.IN_QUEUE
        job.created_at = self._clock()
        job.started_at = job.finished_at = None
        job.worker_id = job.output = job.error = job.progress = None
        job.stream.clear()
        job.stream_at.clear()
        job.stream_read = 0
        job.retries += 1
        job.done = asyncio.Event()
        self.counters.retried += 1
        self._enqueue(job)
        return True

    def purge(self) -> int:
        """Drop every queued job (running ones go on), as RunPod's /purge-queue."""
        removed = [*self._queued, *self._low]
        self._queued.clear()
        self._low.clear()
        for job in removed:
            self.jobs.pop(job.id, None)
            job.status = JobStatus.CANCELLED
            job.done.set()
        return len(removed)

    # --- workers --------------------------------------------------------------------------
    async def take(self, worker_id: str, count: int, hold_s: float) -> list[Job]:
        """Long-poll for up to ``count`` jobs; an empty list means none came in ``hold_s``."""
        jobs = self._pop(count)
        if jobs:
            self._start(jobs, worker_id)
            return jobs
        future: asyncio.Future[list[Job]] = asyncio.get_running_loop().create_future()
        entry = (worker_id, count, future)
        self._takers.append(entry)
        try:
            return await asyncio.wait_for(asyncio.shield(future), hold_s)
        except TimeoutError:
            if future.done() and not future.cancelled():
                # The job arrived in the same tick the poll ran out: keep it.
                return future.result()
            future.cancel()
            return []
        finally:
            if entry in self._takers:
                self._takers.remove(entry)

    def release_takers(self, worker_id: str | None = None) -> None:
        """Answer parked job-takes with nothing (a worker stopping, or the twin)."""
        for entry in list(self._takers):
            if worker_id is None or entry[0] == worker_id:
                self._takers.remove(entry)
                if not entry[2].done():
                    entry[2].set_result([])

    def requeue(self, jobs: Iterable[Job]) -> None:
        """Put taken jobs back at the head of the queue (their take never reached a worker)."""
        for job in reversed(list(jobs)):
            if job.status is not JobStatus.IN_PROGRESS:
                continue
            self._running.pop(job.id, None)
            self._release(job.worker_id)
            job.status = JobStatus.IN_QUEUE
            job.started_at = None
            job.worker_id = None
            (self._low if job.policy.low_priority else self._queued).appendleft(job)
        self._dispatch()
        self.on_queued()

    def routing_left_s(self, jobs: Iterable[Job], routing_s: float) -> float:
        """How much of the platform's routing time ``jobs`` still have to wait, now.

        Routing begins once a job is queued and its worker is free (its last job done), not
        when the worker asks: it runs alongside the SDK's pause between asking, as RunPod's
        scheduler routes on the job-done it has already seen.
        """
        began = max((job.routed_at or 0.0 for job in jobs), default=0.0)
        return max(0.0, began + routing_s - self._clock())

    def forget_worker(self, worker_id: str) -> None:
        """Drop what the queue keeps of a worker that is gone."""
        self._free_since.pop(worker_id, None)

    def restamp_start(self, jobs: Iterable[Job]) -> None:
        """Move the take time of running jobs to now (after simulated dispatch latency)."""
        now = self._clock()
        for job in jobs:
            if job.status is JobStatus.IN_PROGRESS:
                job.started_at = now

    def complete(self, job: Job, output: Any, error: str | None) -> None:
        """Record a worker's result; late results for finished jobs are ignored."""
        if job.status is not JobStatus.IN_PROGRESS:
            return
        job.output = output
        job.error = error
        self._finish(job, JobStatus.FAILED if error is not None else JobStatus.COMPLETED)

    def fail(self, job: Job, reason: str, status: JobStatus = JobStatus.FAILED) -> None:
        """End a job the platform gave up on (worker died, execution timeout)."""
        if job.status in FINAL:
            return
        self._remove_queued(job)
        job.error = reason
        self._finish(job, status)

    def progress(self, job: Job, update: Any) -> None:
        """Record a running job's progress update; one arriving after the result is dropped
        (the SDK sends it from its own thread, so it may overtake nothing or everything)."""
        if job.status is not JobStatus.IN_PROGRESS:
            return
        job.progress = update
        job.changed.set()

    def add_stream(self, job: Job, chunks: Iterable[Any]) -> None:
        """Append streamed partial outputs for /stream, stamped with their arrival."""
        added = list(chunks)
        job.stream.extend(added)
        job.stream_at.extend([self._clock()] * len(added))
        job.changed.set()

    # --- views ----------------------------------------------------------------------------
    def in_queue(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._queued) + len(self._low)

    def in_progress(self) -> list[Job]:
        """Jobs a worker has taken and not finished."""
        return list(self._running.values())

    def oldest_wait_s(self, *, include_low: bool = False) -> float:
        """How long the oldest queued job has waited (0 with an empty queue)."""
        heads = [q[0].created_at for q in (self._queued, self._low if include_low else ()) if q]
        return self._clock() - min(heads) if heads else 0.0

    def waiting_takers(self) -> int:
        """Workers parked in a job-take long-poll right now."""
        return len(self._takers)

    def expire(self) -> list[Job]:
        """Time out jobs past their limits and forget finished jobs past retention.

        Returns the running jobs that timed out: their workers must be told to stop them.
        """
        now = self._clock()
        timed_out: list[Job] = []
        for job in list(self._running.values()):
            assert job.started_at is not None
            if (now - job.started_at) * 1000 > job.policy.execution_timeout_ms:
                timed_out.append(job)
                self.fail(
                    job,
                    f"execution timeout: the job ran longer than policy.executionTimeout "
                    f"({job.policy.execution_timeout_ms} ms)",
                    JobStatus.TIMED_OUT,
                )
        for queue in (self._queued, self._low):
            for job in list(queue):
                if (now - job.created_at) * 1000 > job.policy.ttl_ms:
                    self.fail(
                        job,
                        f"ttl expired: the job waited longer than policy.ttl "
                        f"({job.policy.ttl_ms} ms)",
                        JobStatus.TIMED_OUT,
                    )
        # Retention is coarse (a minute or more), so sweep it once a second, not every tick.
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            for job in list(self.jobs.values()):
                if job.finished_at is not None:
                    keep = SYNC_RETENTION_S if job.sync else ASYNC_RETENTION_S
                    if now - job.finished_at > keep:
                        del self.jobs[job.id]
        return timed_out

    # --- internals ------------------------------------------------------------------------
    def _pop(self, count: int) -> list[Job]:
        jobs: list[Job] = []
        for queue in (self._queued, self._low):
            while queue and len(jobs) < count:
                jobs.append(queue.popleft())
        return jobs

    def _dispatch(self) -> None:
        while self._takers and self.in_queue():
            worker_id, count, future = self._takers.popleft()
            if future.done():
                continue
            jobs = self._pop(count)
            self._start(jobs, worker_id)
            future.set_result(jobs)

    def _start(self, jobs: list[Job], worker_id: str) -> None:
        now = self._clock()
        free = self._free_since.pop(worker_id, now)
        for job in jobs:
            job.status = JobStatus.IN_PROGRESS
            job.started_at = now
            job.routed_at = max(job.created_at, free)
            job.worker_id = worker_id
            self._running[job.id] = job
            self._busy[worker_id] += 1
            job.changed.set()

    def _release(self, worker_id: str | None) -> int:
        """One running job of *worker_id* is no longer running; how many it still runs."""
        if worker_id is None:  # not taken by a worker: nothing to release
            return 0
        left = self._busy[worker_id] - 1
        if left > 0:
            self._busy[worker_id] = left
        else:
            del self._busy[worker_id]
        return left

    def _remove_queued(self, job: Job) -> None:
        for queue in (self._queued, self._low):
            if job in queue:
                queue.remove(job)

    def _finish(self, job: Job, status: JobStatus) -> None:
        worker = job.worker_id
        if self._running.pop(job.id, None) is not None and worker and not self._release(worker):
            self._free_since[worker] = self._clock()
        job.status = status
        # A job that never started gets no executionTime (started_at stays None), but its
        # retention still runs from the moment it ended.
        job.finished_at = self._clock()
        if status is JobStatus.COMPLETED:
            self.counters.completed += 1
        elif status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            self.counters.failed += 1
        job.done.set()
        job.changed.set()
