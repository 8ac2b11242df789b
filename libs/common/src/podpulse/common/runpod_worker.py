"""podpulse's job loop for runpod SDK workers: the next job is asked for the moment a slot frees.

The runpod SDK (1.12) runs a worker's jobs through ``JobScaler`` (``rp_scale.py``). Three of
its habits cost every job time that no handler spends:

- ``get_jobs`` sleeps a whole second whenever the worker is at its concurrency limit, so a
  job that finishes mid-sleep leaves its slot empty for the rest of that second: back-to-back
  jobs on one worker wait ~0.9 s in the queue (RunPod's ``delayTime``);
- its occupancy counts a taken job twice (queue plus ``JobsProgress``) until ``run_jobs``
  picks it up, so a worker at concurrency 1 is "full" as soon as it takes one job;
- ``run_jobs`` looks for taken jobs every 100 ms, which shows inside ``executionTime``.

:class:`FastJobScaler` is a subclass that replaces exactly those waits with events: a slot
freed (a job ended), a job queued, the worker told to stop; each wait also ends after a
second, as a fallback, so an idle worker wakes once a second and otherwise sleeps. A taken
job counts once. Everything else is the SDK's own code, called, not copied: the job-take
and job-stop long-polls, ``handle_job`` (handler, streaming, ``return_aggregate_stream``,
``refresh_worker``, the result POST), per-job stop and cancel, ``concurrency_modifier``,
the heartbeat, the fitness checks and local test mode. Results go over the scaler's one
aiohttp session, as the SDK's do; the ``RetryClient`` the SDK wraps around it per result
shares its connections and costs about 2 microseconds, so it stays.

Its heartbeat proves the job loop is alive. The SDK pings from a child process, so a worker
whose main process is frozen (stopped, deadlocked, stuck in native code, or a sync handler
blocking the event loop) would go on looking alive until its job's execution timeout. The
heartbeat process reads the job ids it reports from a shared mirror before every ping;
:class:`GatedPingMirror` adds the time the loop last beat (a task on the main process's event
loop, several times a ping interval) and holds that read while the beat is older than one
ping interval. A frozen loop thus stops the pings, and the platform (hosted RunPod or the
twin) sees the worker as dead; the pings resume the moment the loop runs again.

Hosted RunPod runs whatever loop the worker image runs, so this changes what a podpulse
worker shows there too. ``WORKER_JOB_LOOP=sdk`` (``podpulse twin serve --job-loop sdk``)
runs the stock loop instead, which is also what workers built on the plain SDK show.

The overridden methods are checked against the installed SDK (:func:`sdk_drift`): the
runpod pin names the versions this was verified on, and a test fails when any method this
relies on changes. Should an SDK that differs be installed anyway, :func:`serve` runs the
stock loop and says why, rather than a loop verified against other code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import multiprocessing
import signal
import time
from collections.abc import Callable
from typing import Any

from . import _runpod_import  # noqa: F401  # first: runpod without py-cpuinfo's subprocess

# isort: split
from runpod.http_client import TooManyRequests
from runpod.serverless.modules import rp_local, rp_scale, worker_state
from runpod.serverless.modules.rp_logger import RunPodLogger

from .process import JobLoop
from .retry import Backoff
from .source_drift import drift

__all__ = ["SDK_VERIFIED", "FastJobScaler", "GatedPingMirror", "JobLoop", "sdk_drift", "serve"]

log = RunPodLogger()

# Every wait on an event also ends after this long: a lost wake-up costs at most this much,
# and an idle worker wakes once per interval (a few microseconds of work) and otherwise sleeps.
FALLBACK_WAKE_S = 1.0
# The SDK's answer to a 429 from job-take: wait five seconds (rp_scale.py).
TOO_MANY_REQUESTS_S = 5.0
# The loop beats this many times per stall limit: one late beat never withholds a ping.
BEATS_PER_LIMIT = 4
# How often a withheld ping looks again whether the loop has beaten.
GATE_POLL_S = 0.1

# sha256 (first 16 hex digits) of inspect.getsource() of every SDK function or method the fast
# loop calls, inherits or replaces, as verified on runpod 1.12.0. A change to any of them
# needs a look before the pin moves: libs/common/tests/test_common_runpod_worker.py fails until
# this is updated.
SDK_VERIFIED: dict[str, str] = {
    "runpod.serverless:start": "aa3f846dcfc5da4f",
    "runpod.serverless.worker:run_worker": "ce0b9b3f79f9f9d3",
    "runpod.serverless.modules.rp_scale:JobScaler.__init__": "a6f8e34dff6a9dce",
    "runpod.serverless.modules.rp_scale:JobScaler.set_scale": "e137f173c456d41b",
    "runpod.serverless.modules.rp_scale:JobScaler.start": "1be10193840eb9d5",
    "runpod.serverless.modules.rp_scale:JobScaler.handle_shutdown": "5d8a51e34251f513",
    "runpod.serverless.modules.rp_scale:JobScaler.run": "f6c6b5f871b94c72",
    "runpod.serverless.modules.rp_scale:JobScaler.is_alive": "261d783f83839b12",
    "runpod.serverless.modules.rp_scale:JobScaler.kill_worker": "863effbe007ad0f9",
    "runpod.serverless.modules.rp_scale:JobScaler.current_occupancy": "b2aea650fe668006",
    "runpod.serverless.modules.rp_scale:JobScaler.get_jobs": "e08b2e0cfb262643",
    "runpod.serverless.modules.rp_scale:JobScaler.run_jobs": "74cd623de98ef8b4",
    "runpod.serverless.modules.rp_scale:JobScaler.monitor_stop_signals": "3bf52c6dcde159b4",
    "runpod.serverless.modules.rp_scale:JobScaler.stop_job": "dc57f329f526b934",
    "runpod.serverless.modules.rp_scale:JobScaler.handle_job": "fe2350bfac7373f7",
    "runpod.serverless.modules.rp_job:get_job": "8ce238208ca5261a",
    "runpod.serverless.modules.rp_job:handle_job": "849f93639768bc87",
    "runpod.serverless.modules.rp_http:_handle_result": "ce88ccb812bcc41f",
    "runpod.serverless.modules.rp_http:_transmit": "fc9d60458af96c8a",
    "runpod.serverless.modules.worker_state:JobsProgress.add": "2a970b6aec9d2f83",
    "runpod.serverless.modules.worker_state:JobsProgress.remove": "f2a765aa94f48e19",
    # The heartbeat gate: run_worker builds worker_state.PingJobMirror and hands it to the ping
    # process, which reads it (get) before each ping and reads its interval in __init__.
    "runpod.serverless.modules.worker_state:JobsProgress.set_mirror": "9addcc48a49bcc51",
    "runpod.serverless.modules.worker_state:PingJobMirror.__init__": "6dea33508cae8e51",
    "runpod.serverless.modules.worker_state:PingJobMirror.set": "a87b76b6a6a258ee",
    "runpod.serverless.modules.worker_state:PingJobMirror.get": "c05957cd0508d95a",
    "runpod.serverless.modules.rp_ping:Heartbeat.__init__": "6c6e3fc078a5362c",
    "runpod.serverless.modules.rp_ping:Heartbeat.start_ping": "a8ca44bfd5514a09",
    "runpod.serverless.modules.rp_ping:Heartbeat.process_loop": "f54db565723eff22",
    "runpod.serverless.modules.rp_ping:Heartbeat.ping_loop": "7904a80e2bfec1d8",
    "runpod.serverless.modules.rp_ping:Heartbeat._send_ping": "9dea1914ce060da6",
}


def sdk_drift() -> list[str]:
    """The SDK functions in :data:`SDK_VERIFIED` whose installed source differs (or is gone)."""
    return drift(SDK_VERIFIED)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


class GatedPingMirror(worker_state.PingJobMirror):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's job-id mirror to the heartbeat process, read only while the job loop beats.

    The heartbeat process calls :meth:`get` before every ping (``Heartbeat._send_ping``), so
    holding that call while the loop's last :meth:`beat` is older than ``stall_limit_s``
    withholds the ping without replacing the SDK's heartbeat. The beat is a shared double of
    ``time.monotonic()``, a clock every process on the machine shares. Built in the main
    process before the heartbeat process starts, so that process gets the same shared memory
    (the SDK's own mirror is shared the same way).
    """

    def __init__(
        self,
        stall_limit_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.stall_limit_s = stall_limit_s
        self._clock = clock
        self._sleep = sleep
        self._beat = multiprocessing.Value("d", clock())

    def beat(self) -> None:
        """Record that the job loop ran just now."""
        self._beat.value = self._clock()

    def stalled(self) -> bool:
        """Whether the loop has not beaten for longer than the stall limit."""
        last: float = self._beat.value
        return self._clock() - last > self.stall_limit_s

    def get(self) -> str | None:
        """The in-progress job ids for the next ping, once the loop beats again."""
        while self.stalled():
            self._sleep(GATE_POLL_S)
        ids: str | None = super().get()
        return ids


class FastJobScaler(rp_scale.JobScaler):  # type: ignore[misc]  # the SDK is untyped (Any)
    """The SDK's ``JobScaler`` with its sleeps replaced by events; see the module docstring."""

    # The SDK's attributes, typed (it has no annotations of its own).
    current_concurrency: int
    jobs_queue: asyncio.Queue[dict[str, Any]]

    def __init__(self, config: dict[str, Any], gate: GatedPingMirror | None = None) -> None:
        super().__init__(config)
        self._gate = gate  # beaten while the loop runs, so the heartbeat pings (serve)
        self._slot_freed = asyncio.Event()
        self._queued = asyncio.Event()
        self._taking = False  # a job-take is in flight: what it returns must still run
        # Errors other than a 429 (the platform unreachable, a 5xx): the SDK retries those at
        # once, which spins a core for as long as the platform is down.
        self._error_backoff = Backoff(base_s=0.1, max_s=5.0)

    # --- the SDK's hooks, woken instead of polled ------------------------------------------
    async def run(self) -> None:
        """The SDK's loops, with SIGTERM/SIGINT handled by the event loop, which they wake,
        and the beat its heartbeat gate waits for."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # A plain signal handler (the SDK's) sets the shutdown flag but does not wake a
            # loop parked on an event; the loop's own handler does. Off the main thread the
            # SDK's handler stays, and the fallback wake-up notices the flag within a second.
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, self.kill_worker)
        beating = (
            None if self._gate is None else asyncio.create_task(self._keep_beating(self._gate))
        )
        try:
            await super().run()
        finally:
            # Only now: the jobs still draining after SIGTERM keep the heartbeat going.
            if beating is not None:
                beating.cancel()

    @staticmethod
    async def _keep_beating(gate: GatedPingMirror) -> None:
        """Beat while this event loop runs: whatever stalls it (the process stopped, a sync
        handler or native code blocking it, a deadlock) stalls the beat and so the pings."""
        while True:
            gate.beat()
            await asyncio.sleep(gate.stall_limit_s / BEATS_PER_LIMIT)

    def kill_worker(self) -> None:
        """Stop taking jobs (SIGTERM, refresh_worker) and wake every wait to notice."""
        super().kill_worker()
        self._slot_freed.set()
        self._queued.set()

    def current_occupancy(self) -> int:
        """Jobs taken and not finished. A queued job is in ``JobsProgress`` already, so it
        counts once (the SDK adds the queue size on top and sees a free worker as full)."""
        count: int = self.job_progress.get_job_count()
        return count

    async def set_scale(self) -> None:
        """The SDK's: follow ``concurrency_modifier``, resizing only when no job is in flight
        (woken by a job ending instead of re-checking every second)."""
        self.current_concurrency = self.concurrency_modifier(self.current_concurrency)
        if self.current_concurrency == self.jobs_queue.maxsize:
            return
        while self.current_occupancy() > 0:
            self._slot_freed.clear()
            await _wait(self._slot_freed, FALLBACK_WAKE_S)
        self.jobs_queue = asyncio.Queue(maxsize=self.current_concurrency)

    async def get_jobs(self, session: Any) -> None:
        """Take as many jobs as there are free slots; when none is free, wait for one."""
        failures = 0
        while self.is_alive():
            await self.set_scale()
            jobs_needed = self.current_concurrency - self.current_occupancy()
            if jobs_needed <= 0:
                self._slot_freed.clear()
                await _wait(self._slot_freed, FALLBACK_WAKE_S)
                continue
            self._taking = True
            try:
                acquired = await asyncio.wait_for(
                    self.jobs_fetcher(session, jobs_needed), timeout=self.jobs_fetcher_timeout
                )
                failures = 0
                for job in acquired or ():
                    await self.jobs_queue.put(job)
                    self.job_progress.add(job)
            except TooManyRequests:
                log.debug("FastJobScaler.get_jobs | Too many requests. Debounce for 5 seconds.")
                await _wait(self._shutdown_event, TOO_MANY_REQUESTS_S)
            except TimeoutError:
                log.debug("FastJobScaler.get_jobs | Job acquisition timed out. Retrying.")
            except Exception as error:  # the SDK's catch-all: the loop must outlive any answer
                # TRY400: RunPodLogger has no exception(); this is the SDK's own line.
                log.error(  # noqa: TRY400
                    f"Failed to get job. | Error Type: {type(error).__name__} "
                    f"| Error Message: {error}"
                )
                await _wait(self._shutdown_event, self._error_backoff.delay(failures))
                failures += 1
            finally:
                self._taking = False
                self._queued.set()

    async def run_jobs(self, session: Any) -> None:
        """Start every taken job at once; on shutdown, run what is left, then wait for all."""
        tasks: set[asyncio.Task[None]] = set()
        while self.is_alive() or self._taking or not self.jobs_queue.empty():
            while not self.jobs_queue.empty():
                job = self.jobs_queue.get_nowait()
                task = asyncio.create_task(self.handle_job(session, job))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.jobs_tasks[job["id"]] = task
            # No await between the last empty() and clear(): a put after this sets it again.
            self._queued.clear()
            if self.is_alive() or self._taking:
                await _wait(self._queued, FALLBACK_WAKE_S)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error(f"FastJobScaler.run_jobs | Task failed during shutdown drain: {result}")

    async def handle_job(self, session: Any, job: dict[str, Any]) -> None:
        """The SDK's, then wake the job-take loop: this job's slot is free."""
        try:
            await super().handle_job(session, job)
        finally:
            self._slot_freed.set()


def serve(config: dict[str, Any], job_loop: JobLoop) -> None:
    """``runpod.serverless.start(config)``, running ``job_loop``'s scaler on hosted workers.

    ``fast`` swaps :class:`FastJobScaler` in for the name the SDK's ``run_worker`` looks up
    (``rp_scale.JobScaler``) for this call, and a :class:`GatedPingMirror` that it beats for
    the mirror ``run_worker`` hands the heartbeat (``worker_state.PingJobMirror``); everything
    else ``start`` does is the SDK's. The stall limit is the ping interval the SDK's heartbeat
    read (``RUNPOD_PING_INTERVAL``): a ping vouches for the interval before it. Either loop's
    local test (``rp_local.run_local``) runs a generator handler collected (:func:`_collected`).
    """
    stock_local = rp_local.run_local

    async def run_local(local: dict[str, Any]) -> None:
        await stock_local({**local, "handler": _collected(local["handler"])})

    rp_local.run_local = run_local
    try:
        _start(config, job_loop)
    finally:
        rp_local.run_local = stock_local


def _start(config: dict[str, Any], job_loop: JobLoop) -> None:
    from runpod import serverless
    from runpod.serverless import worker

    if job_loop == "sdk":
        serverless.start(config)
        return
    if drift := sdk_drift():
        log.warn(
            "podpulse fast job loop: the installed runpod SDK differs from the verified one in "
            f"{', '.join(drift)}; running the stock SDK job loop instead"
        )
        serverless.start(config)
        return
    interval_s: int = worker.heartbeat.PING_INTERVAL
    gate = GatedPingMirror(stall_limit_s=max(1.0, interval_s))
    stock, stock_mirror = rp_scale.JobScaler, worker_state.PingJobMirror
    rp_scale.JobScaler = functools.partial(FastJobScaler, gate=gate)
    worker_state.PingJobMirror = lambda: gate
    try:
        serverless.start(config)
    finally:
        rp_scale.JobScaler, worker_state.PingJobMirror = stock, stock_mirror


def _collected(handler: Callable[..., Any]) -> Callable[..., Any]:
    """*handler*, a generator one collected into one list, for the SDK's local test
    (``--test_input``, or test_input.json when no platform URL is set, as an image's build
    check runs it).

    That test awaits what the handler returns and reports it: a generator is not awaitable,
    so it would be reported a success without running a step. Collected, the test sees what
    the platform's ``return_aggregate_stream`` gives, and a failed job fails it. Only the
    local test: the local API server (``--rp_serve_api``) streams a generator itself.
    """
    if not inspect.isasyncgenfunction(handler):
        return handler

    async def collected(job: dict[str, Any]) -> Any:
        outputs = [output async for output in handler(job)]
        # A yielded {"error": ...} fails a streamed job on the platform; here too.
        errors = [o["error"] for o in outputs if isinstance(o, dict) and "error" in o]
        return {"error": str(errors[0])} if errors else outputs

    return collected
