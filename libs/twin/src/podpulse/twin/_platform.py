"""The platform: one endpoint's queue, its workers, and the loop that scales and polices them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import structlog

from podpulse.common.runpod import EndpointConfig
from podpulse.common.settings import settings_variable

from ._jobs import JobQueue, JobStatus
from ._scaler import Snapshot, workers_to_add
from ._worker_env import applied
from ._workers import Liveness, WorkerPool, WorkerRecord, WorkerState, log_tail
from .settings import TwinSettings

__all__ = ["Platform"]

log = structlog.get_logger("podpulse.twin")

# The answer to a signalled worker's job-stop poll when it has no job to stop. It names no job,
# so the SDK stops nothing; but an empty answer would make the SDK sleep a second before it
# looks at its shutdown flag again, and every stopping worker would cost that second.
RELEASE_MARKER = "podpulse-twin-release"
# What a job still running (or waiting) says when the twin stops: the twin's end, not the
# exit of the worker it stopped on the way.
STOPPED_WHILE_RUNNING = "the twin stopped while the job ran"
STOPPED_WHILE_QUEUED = "the twin stopped before a worker took the job"


class Platform:
    """Everything behind the twin's HTTP routes."""

    def __init__(self, settings: TwinSettings, *, worker_env: Mapping[str, str]) -> None:
        self.settings = settings
        self.scaling: EndpointConfig = settings.scaling()
        self.queue = JobQueue()
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        # Each worker authenticates with its own token (as RunPod gives each worker its own
        # key); the public key, which any handler could read from its environment, stays out.
        self.pool = WorkerPool(
            command=settings.worker_command,
            base_env={**self._platform_env(), **worker_env},
            log_dir=settings.log_dir,
            stop_grace_s=settings.stop_grace_s,
            withheld=[settings_variable(TwinSettings, n) for n in ("api_key", "api_key_file")],
            withheld_values=[settings.api_key.get_secret_value()],
        )
        self._liveness = Liveness(
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            start_timeout_s=settings.start_timeout_s,
        )
        # Tokens handed out for SDK workers the twin did not start (external_worker_env).
        self._external_tokens: dict[str, str] = {}
        self._stop_wakeups: dict[str, asyncio.Event] = {}
        self._roll_wakeups: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self.queue.on_queued = self._wake.set
        self._loop_task: asyncio.Task[None] | None = None
        self.closing = False
        self._failed_starts = 0  # consecutive workers that died before their first job-take
        self.last_start_failure: str | None = None  # why the latest of those died, its last lines
        self._spawn_after = 0.0
        # The endpoint's always-on workers are up when the twin starts, as a warm endpoint's
        # are: the cold start (cold_start_ms) is for the workers the scaler adds after them.
        self._warm_left = settings.workers_min

    # --- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the control loop; its first tick starts workersMin workers."""
        self._loop_task = asyncio.create_task(self._control_loop(), name="twin-control")

    def begin_shutdown(self) -> None:
        """Signal every worker, then answer its parked long-polls, so all exit at once.

        The SDK leaves its loops on SIGTERM only when their long-polls return; the jobs still
        running are stopped too, since the twin fails them anyway as it closes.
        """
        if self.closing:
            return
        self.closing = True
        running: dict[str, list[str]] = {}
        for job in self.queue.in_progress():
            if job.worker_id is not None:
                running.setdefault(job.worker_id, []).append(job.id)
            # Now, not once the workers are gone: a /runsync still waiting answers with this
            # before the server closes its connection.
            self.queue.fail(job, STOPPED_WHILE_RUNNING)
        for job in list(self.queue.jobs.values()):
            if job.status is JobStatus.IN_QUEUE:
                self.queue.fail(job, STOPPED_WHILE_QUEUED)
        for record in list(self.pool.workers.values()):
            record.pending_stops.extend(running.get(record.id, []))
            self.pool.stop(record)
        self.queue.release_takers()
        self._release_roll()
        for event in self._stop_wakeups.values():
            event.set()

    async def close(self) -> None:
        """Stop the loop, release parked polls, and stop every worker process."""
        self.begin_shutdown()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        self.queue.release_takers()
        for event in self._stop_wakeups.values():
            event.set()
        await asyncio.to_thread(self.pool.shutdown)
        for job in self.queue.in_progress():
            self.queue.fail(job, STOPPED_WHILE_RUNNING)

    def update_scaling(self, config: EndpointConfig) -> None:
        """Apply new endpoint settings (management PATCH); the loop acts on the next tick."""
        self.scaling = config
        self._wake.set()

    def update_worker_env(self, changes: Mapping[str, str | None]) -> int:
        """Change the workers' environment and roll every worker started before; the number
        of workers to replace. An idle one stops now, a busy one after its job
        (the scaler starts replacements as for any stopped worker)."""
        self.pool.env_overrides = applied(self.pool.env_overrides, changes)
        self.pool.env_revision += 1
        rolling = self.workers_to_roll()
        # Now, not on the next tick: a stale worker parked in a job-take would otherwise be
        # handed the next job that arrives. An idle one is stopped; a busy one's take (it runs
        # several jobs) is answered, and its next take parks in hold_stale.
        for record in self.pool.workers.values():
            if self.is_stale(record):
                self.queue.release_takers(record.id)
        self._roll()
        self._wake.set()  # the scaler starts the replacements
        log.info("worker env changed", names=sorted(changes), workers_to_roll=rolling)
        return rolling

    def workers_to_roll(self) -> int:
        """How many workers still run an older environment than the current one."""
        return sum(self.is_stale(r) for r in self.pool.workers.values())

    async def hold_stale(self, record: WorkerRecord) -> None:
        """Park a stale worker's job-take until the loop stops it (or the take's hold ends).

        A worker being rolled takes no new job: under steady load it would never be idle, so
        never replaced. Answering at once would have its SDK ask again at once, so it waits.
        """
        wakeup = self._roll_wakeups.setdefault(record.id, asyncio.Event())
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), self.settings.take_hold_s)

    def _release_roll(self, worker_id: str | None = None) -> None:
        # Answer a parked take of hold_stale (one worker's, or every one's).
        for key in [worker_id] if worker_id is not None else list(self._roll_wakeups):
            wakeup = self._roll_wakeups.pop(key, None)
            if wakeup is not None:
                wakeup.set()

    def is_stale(self, record: WorkerRecord) -> bool:
        """Whether *record* runs with an environment older than the current one."""
        # A worker still in its cold start reads the environment when its process starts.
        return (
            record.spawned
            and record.process is not None
            and record.state is not WorkerState.STOPPING
            and record.env_revision < self.pool.env_revision
        )

    # --- worker-facing --------------------------------------------------------------------
    def worker_token(self, worker_id: str) -> str | None:
        """The token worker ``worker_id`` must send, or None for no worker of the twin's."""
        record = self.pool.workers.get(worker_id)
        if record is not None:
            return record.token
        # A spawned worker that was declared dead is not let back in under its old id.
        return self._external_tokens.get(worker_id)

    @property
    def failed_starts(self) -> int:
        """Workers in a row that died before asking for work (0 once one does)."""
        return self._failed_starts

    def external_worker_env(self, worker_id: str) -> dict[str, str]:
        """The platform environment for an SDK worker the twin did not start, with its token."""
        token = self._external_tokens.setdefault(worker_id, secrets.token_urlsafe(24))
        return {**self.pool.base_env, "RUNPOD_POD_ID": worker_id, "RUNPOD_AI_API_KEY": token}

    def worker_seen(self, worker_id: str, *, ping: bool = False) -> WorkerRecord:
        """Note a worker call (a heartbeat when ``ping``) and return its record."""
        token = self.worker_token(worker_id)
        assert token is not None, "the worker API authenticates before it calls this"
        known = self.pool.workers.get(worker_id)
        first_call = known is None or known.called_in is None
        record = self.pool.seen(worker_id, token, ping=ping)
        if record.spawned:
            self._failed_starts = 0
        if first_call:
            started = record.process_started or record.spawned_at
            log.info("worker ready", worker_id=record.id,
                     took_s=round(time.monotonic() - started, 2))  # fmt: skip
        return record

    def request_stop(self, worker_id: str, job_id: str) -> None:
        """Queue a job-stop signal for a worker and wake its long-poll."""
        record = self.pool.workers.get(worker_id)
        if record is None:
            return
        record.pending_stops.append(job_id)
        self._stop_event(worker_id).set()

    def reconcile(self, worker_id: str, running: list[str]) -> None:
        """Stop again any job a worker still runs that the platform has ended.

        A stop signal that reaches the SDK before its job loop has started the job (it looks
        every 100 ms) is dropped by the SDK; the heartbeat's job list shows that, and the
        signal is sent again.
        """
        record = self.pool.workers.get(worker_id)
        if record is None:
            return
        for job_id in running:
            job = self.queue.jobs.get(job_id)
            ended = job is None or job.status is not JobStatus.IN_PROGRESS
            if ended and job_id not in record.pending_stops:
                self.request_stop(worker_id, job_id)

    async def wait_stops(self, worker_id: str) -> list[str]:
        """Long-poll for job ids this worker must stop."""
        record = self.pool.workers.get(worker_id)
        if record is None:
            return []
        signalled = record.process is not None and record.stop_sent_at is not None
        if not record.pending_stops and not signalled and not self.closing:
            event = self._stop_event(worker_id)
            event.clear()
            # A busy worker's job loop proves it is alive by polling again (_workers._silence);
            # after an empty answer the SDK pauses a second first, so a quarter of the
            # heartbeat timeout leaves room for that pause and a slow machine.
            hold_s = min(self.settings.stop_hold_s, self.settings.heartbeat_timeout_s / 4)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), hold_s)
            signalled = record.process is not None and record.stop_sent_at is not None
        stops, record.pending_stops = record.pending_stops, []
        if signalled and not stops:
            return [RELEASE_MARKER]
        return stops

    def _stop_event(self, worker_id: str) -> asyncio.Event:
        return self._stop_wakeups.setdefault(worker_id, asyncio.Event())

    # --- views ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """RunPod's /health body."""
        busy = {j.worker_id for j in self.queue.in_progress()}
        counts = {"idle": 0, "running": 0, "initializing": 0, "ready": 0, "throttled": 0,
                  "unhealthy": min(self._failed_starts, 1)}  # fmt: skip
        for record in self.pool.workers.values():
            if record.state is WorkerState.INITIALIZING:
                counts["initializing"] += 1
            elif record.id in busy:
                counts["running"] += 1
            elif record.state is WorkerState.READY:
                counts["idle"] += 1
                counts["ready"] += 1
        jobs = {
            "completed": self.queue.counters.completed,
            "failed": self.queue.counters.failed,
            "inProgress": len(self.queue.in_progress()),
            "inQueue": self.queue.in_queue(),
            "retried": self.queue.counters.retried,
        }
        return {"jobs": jobs, "workers": counts}

    # --- the loop -------------------------------------------------------------------------
    async def _control_loop(self) -> None:
        while True:
            try:
                self._tick()
            except Exception:  # one bad tick must not stop scaling for good
                log.exception("twin control tick failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.tick_s)

    def _tick(self) -> None:
        if self.closing:
            # Shutting down: no new workers, and jobs end as "the twin shut down", not as
            # lost to the workers being stopped.
            return
        self.pool.start_due()
        self._reap()
        for job in self.queue.expire():
            # The worker still runs a timed-out job until told to stop it.
            if job.worker_id is not None:
                self.request_stop(job.worker_id, job.id)
        self._roll()
        self._scale_up()
        self._scale_down()

    def _reap(self) -> None:
        busy_since: dict[str, float] = {}
        for job in self.queue.in_progress():
            if job.worker_id is not None and job.started_at is not None:
                busy_since[job.worker_id] = max(busy_since.get(job.worker_id, 0.0), job.started_at)
        gone = self.pool.reap(self._liveness, busy_since)
        for record, reason in gone:
            if record.spawned and record.state is WorkerState.INITIALIZING:
                # It died before asking for work (bad handler, model that cannot load): back
                # off before the next start instead of respawning in a tight loop.
                self._failed_starts += 1
                delay = min(2.0**self._failed_starts, 60.0)
                self._spawn_after = time.monotonic() + delay
                tail = log_tail(record.log_path)
                self.last_start_failure = f"{reason}: {tail}" if tail else reason
                log.error("worker failed to start", worker_id=record.id, reason=reason,
                          last_output=tail, log=str(record.log_path),
                          retry_in_s=delay)  # fmt: skip
            # Its job-stop poll may still be parked (a killed worker's connection is not seen
            # to close): answer it now, or shutdown would wait out the poll's hold.
            wakeup = self._stop_wakeups.pop(record.id, None)
            if wakeup is not None:
                wakeup.set()
            self._release_roll(record.id)
            self.queue.release_takers(record.id)
            lost = [j for j in self.queue.in_progress() if j.worker_id == record.id]
            for job in lost:
                self.queue.fail(job, f"worker {record.id} died while running the job: {reason}")
            self.queue.forget_worker(record.id)
            if lost or record.state is not WorkerState.STOPPING:
                tail = log_tail(record.log_path)
                log.warning("worker gone", worker_id=record.id, reason=reason,
                            jobs_failed=len(lost), last_output=tail)  # fmt: skip

    def _snapshot(self) -> Snapshot:
        workers = self.pool.workers.values()
        return Snapshot(
            active=sum(r.state is not WorkerState.STOPPING for r in workers),
            initializing=sum(r.state is WorkerState.INITIALIZING for r in workers),
            queued=self.queue.in_queue(),
            in_progress=len(self.queue.in_progress()),
            oldest_wait_s=self.queue.oldest_wait_s(),
        )

    def _scale_up(self) -> None:
        if time.monotonic() < self._spawn_after:
            return
        for _ in range(workers_to_add(self.scaling, self._snapshot())):
            cold_start_s = 0.0 if self._warm_left > 0 else self.settings.cold_start_ms / 1000
            self._warm_left = max(0, self._warm_left - 1)
            record = self.pool.spawn({}, cold_start_s=cold_start_s)
            log.info("worker starting", worker_id=record.id)

    def _scale_down(self) -> None:
        now = time.monotonic()
        busy = {j.worker_id for j in self.queue.in_progress()}
        active = [r for r in self.pool.workers.values() if r.state is not WorkerState.STOPPING]
        for record in active:
            if record.id in busy:
                record.last_busy = now
        # Longest-idle first. Idle past idleTimeout stops down to workersMin; above workersMax
        # (a PATCH lowered it) idle workers stop at once. Never below workersMin either way.
        idle = sorted(
            (r for r in active if r.id not in busy and r.state is WorkerState.READY),
            key=lambda r: r.last_busy,
        )
        running = len(active)
        for record in idle:
            if running <= self.scaling.workers_min:
                break
            expired = now - record.last_busy >= self.scaling.idle_timeout_s
            if expired or running > self.scaling.workers_max:
                self.stop_worker(record, "idle" if expired else "above workersMax")
                running -= 1

    def _roll(self) -> None:
        busy = {j.worker_id for j in self.queue.in_progress()}
        for record in list(self.pool.workers.values()):
            if self.is_stale(record) and record.id not in busy:
                self.stop_worker(record, "its environment changed")

    def stop_worker(self, record: WorkerRecord, why: str) -> None:
        """Stop one worker: SIGTERM to its group, then its long-polls answered."""
        self.pool.stop(record)
        self.queue.release_takers(record.id)
        self._stop_event(record.id).set()
        self._release_roll(record.id)
        log.info("worker stopping", worker_id=record.id, reason=why)

    # --- env ------------------------------------------------------------------------------
    def _platform_env(self) -> dict[str, str]:
        base = f"{self.settings.base_url}/{self.settings.endpoint_id}"
        # The query string matters: the SDK appends "&job_in_progress=" and "&isStream=".
        query = "?gpu=twin"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{query}",
            "RUNPOD_ENDPOINT_ID": self.settings.endpoint_id,
            "RUNPOD_PING_INTERVAL": str(self.settings.ping_interval_ms),
            "RUNPOD_LOG_LEVEL": self.settings.worker_log_level,
            # The twin's own worker reads its handler and concurrency from these.
            **self.settings.worker_env(),
            # The SDK's start-up fitness checks dial 8.8.8.8 and probe for GPUs; a local
            # worker has neither, and a failed check kills it with os._exit.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "PODPULSE_PARENT_PID": str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
