"""Fault drills on real worker processes: each fault ends its job with a reason, long before
the job's own 60 s would have.

Every drill records how long the job took from the fault to FAILED as a test property
(``<drill>_fault_to_failed_s``), which ``--junitxml`` writes out; the time is reported, not
judged (a loaded machine stretches it), except that a heartbeat drill never ends before its
timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from twin_helpers import calibrated, small, start_job

from podpulse.common.net import free_port
from podpulse.common.testing import wait_until
from podpulse.twin import RunningTwin, TwinSettings, running_twin

pytestmark = pytest.mark.slow

# Pings every second and dead after three silent ones: short enough for a drill, and the
# shortest the settings allow for that interval.
QUICK = {"ping_interval_ms": 1000, "heartbeat_timeout_s": 3}
# How long a drill waits for its job to end: far past the heartbeat timeout, and still short
# of the 60 s a wedged job would run (its error would then not name the fault either).
BOUND_S = 20.0

Record = Callable[[str, object], None]


def _start_job(twin: RunningTwin, api: httpx.Client) -> tuple[str, str, int]:
    """A 60 s job, once it is running: its id, its worker's id and that worker's pid."""
    running = start_job(api, {"exec_ms": 60_000})
    job_id = running["id"]
    worker_id = running["workerId"]
    process = twin.platform.pool.workers[worker_id].process
    assert process is not None
    return job_id, worker_id, process.pid


def _failed_after(api: httpx.Client, job_id: str, fault_at: float) -> tuple[dict[str, Any], float]:
    """The job's FAILED body, and the seconds from ``fault_at`` until it showed."""
    body = wait_until(
        lambda: (b := api.get(f"/status/{job_id}").json())["status"] != "IN_PROGRESS" and b,
        BOUND_S + 10,
        "the job to end",
    )
    elapsed = time.monotonic() - fault_at
    assert body["status"] == "FAILED", body
    return body, elapsed


def _report(
    record_property: Record, drill: str, elapsed: float, what: str = "fault_to_failed"
) -> None:
    record_property(f"{drill}_{what}_s", round(elapsed, 2))


def _serves_again(api: httpx.Client, old_worker: str) -> None:
    """A fresh worker, started in the dead one's place, completes the next job."""
    body = api.post("/runsync", json={"input": {"exec_ms": 5}}).json()
    assert body["status"] == "COMPLETED", body
    assert body["workerId"] != old_worker


def test_heartbeat_timeout_must_outlast_three_ping_intervals() -> None:
    """A heartbeat timeout shorter than three pings is refused, naming both settings."""
    with pytest.raises(ValidationError, match=r"heartbeat_timeout_s .* three ping intervals"):
        TwinSettings(ping_interval_ms=5000, heartbeat_timeout_s=10)
    assert TwinSettings(ping_interval_ms=5000, heartbeat_timeout_s=15).heartbeat_timeout_s == 15


def test_ping_interval_below_a_second_is_refused() -> None:
    """The SDK sleeps whole seconds between pings: under 1000 ms it would never pause."""
    with pytest.raises(ValidationError, match="ping_interval_ms"):
        TwinSettings(ping_interval_ms=500)


def test_defaults_give_a_frozen_worker_at_most_thirty_seconds() -> None:
    """By default a worker is dead after 30 s without a heartbeat, six of its pings."""
    settings = TwinSettings()
    assert settings.heartbeat_timeout_s <= 30
    assert settings.heartbeat_timeout_s >= 3 * settings.ping_interval_ms / 1000


def test_a_busy_worker_that_pings_outlives_the_heartbeat_timeout() -> None:
    """A job running for twice the heartbeat timeout completes: the SDK pings from its own
    process while the handler runs, so only silence, never work, counts as death."""
    with running_twin(small(**QUICK), calibrated()) as twin, twin.client() as api:
        body = api.post("/runsync", json={"input": {"exec_ms": 6_000}}).json()
        assert body["status"] == "COMPLETED", body
        assert body["executionTime"] >= 6_000
        assert body["workerId"] in twin.platform.pool.workers


def _frozen_mid_job(
    twin: RunningTwin, api: httpx.Client, *, whole_group: bool
) -> tuple[dict[str, Any], float, str, subprocess.Popen[bytes]]:
    """SIGSTOP a busy worker (its whole group, or its main process alone) and wait for its job
    to fail: (the job's body, seconds from the fault, the worker's id, its process)."""
    job_id, worker_id, pid = _start_job(twin, api)
    process = twin.platform.pool.workers[worker_id].process
    assert process is not None
    fault_at = time.monotonic()
    if whole_group:
        os.killpg(pid, signal.SIGSTOP)
    else:
        os.kill(pid, signal.SIGSTOP)
    try:
        body, elapsed = _failed_after(api, job_id, fault_at)
    finally:
        # Only if the twin failed to: a stopped group would outlive the test.
        if process.poll() is None:
            os.killpg(pid, signal.SIGKILL)
    return body, elapsed, worker_id, process


def test_drill_sigkill_mid_job(record_property: Record) -> None:
    """SIGKILL on a busy worker: the job FAILS naming the signal, a new worker serves."""
    with running_twin(small(**QUICK), calibrated()) as twin, twin.client() as api:
        job_id, worker_id, pid = _start_job(twin, api)
        fault_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        body, elapsed = _failed_after(api, job_id, fault_at)
        _report(record_property, "sigkill", elapsed)
        assert worker_id in body["error"]
        assert "SIGKILL" in body["error"]
        _serves_again(api, worker_id)


def test_drill_sigstop_mid_job_is_a_missed_heartbeat(record_property: Record) -> None:
    """A frozen worker (its whole group SIGSTOPped) is dead once its heartbeat is silent for
    the timeout: the job FAILS saying so, the frozen processes are killed, a new one serves."""
    with running_twin(small(**QUICK), calibrated()) as twin, twin.client() as api:
        body, elapsed, worker_id, process = _frozen_mid_job(twin, api, whole_group=True)
        _report(record_property, "sigstop", elapsed)
        assert worker_id in body["error"]
        # The twin's own verdict from its clock, not a reading of ours: silent for the timeout.
        assert "missed heartbeats for 3 s" in body["error"]
        wait_until(lambda: process.poll() is not None, 10, "the frozen worker to be killed")
        assert process.returncode == -signal.SIGKILL
        _serves_again(api, worker_id)


@pytest.mark.parametrize(
    ("job_loop", "reason"),
    [
        # podpulse's loop beats for its heartbeat: frozen, it stops the pings.
        ("fast", "missed heartbeats for 3 s"),
        # The stock SDK's heartbeat pings on; the twin sees the job loop silent mid-job.
        ("sdk", "job loop was silent for 3 s mid-job while its heartbeat went on"),
    ],
    ids=["fast", "sdk"],
)
def test_drill_sigstop_of_the_main_process_alone_mid_job(
    record_property: Record, job_loop: str, reason: str
) -> None:
    """Only the main process frozen (its heartbeat process pinging on): the job FAILS within
    the heartbeat timeout saying why, not at its execution timeout, and a new worker serves."""
    settings = small(**QUICK, job_loop=job_loop)
    with running_twin(settings, calibrated()) as twin, twin.client() as api:
        body, elapsed, worker_id, process = _frozen_mid_job(twin, api, whole_group=False)
        _report(record_property, f"sigstop_main_{job_loop}", elapsed)
        assert worker_id in body["error"]
        assert reason in body["error"]
        wait_until(lambda: process.poll() is not None, 10, "the frozen worker to be killed")
        assert process.returncode == -signal.SIGKILL
        _serves_again(api, worker_id)


def test_drill_unnamed_signal_mid_job(record_property: Record) -> None:
    """kill -35 (a real-time signal Python has no name for) ends the job FAILED, naming it."""
    with running_twin(small(**QUICK), calibrated()) as twin, twin.client() as api:
        job_id, worker_id, pid = _start_job(twin, api)
        fault_at = time.monotonic()
        os.kill(pid, 35)
        body, elapsed = _failed_after(api, job_id, fault_at)
        _report(record_property, "signal35", elapsed)
        assert worker_id in body["error"]
        assert "killed by signal 35" in body["error"]
        _serves_again(api, worker_id)


def test_drill_a_worker_whose_pings_never_arrive(record_property: Record) -> None:
    """A worker that takes jobs but whose heartbeat never reaches the twin is dead after the
    heartbeat timeout from its first call: its job FAILS saying so, and it is replaced."""
    # Its SDK pings a port nothing listens on; job-take and job-done still reach the twin.
    lost_pings = {"RUNPOD_WEBHOOK_PING": f"http://127.0.0.1:{free_port()}/ping?gpu=twin"}
    with (
        running_twin(small(**QUICK), calibrated(), worker_env=lost_pings) as twin,
        twin.client() as api,
    ):
        job_id, worker_id, _ = _start_job(twin, api)
        record = twin.platform.pool.workers[worker_id]
        assert record.last_ping is None
        assert record.called_in is not None
        body, elapsed = _failed_after(api, job_id, record.called_in)
        _report(record_property, "no_pings", elapsed)
        assert worker_id in body["error"]
        assert "missed heartbeats for 3 s" in body["error"]
        wait_until(
            lambda: any(w != worker_id for w in twin.platform.pool.workers), 30, "a replacement"
        )


def test_drill_a_worker_that_never_calls_in(record_property: Record) -> None:
    """A spawned process that never talks is declared dead after the start timeout and a new
    one is started; the job it never took stays queued for the next worker."""
    silent = [sys.executable, "-c", "import time; time.sleep(300)"]
    settings = small(**QUICK, worker_command=silent, start_timeout_s=2)
    with running_twin(settings, wait_ready=False) as twin, twin.client() as api:
        job_id = api.post("/run", json={"input": {}}).json()["id"]
        first = wait_until(
            lambda: next((r for r in twin.platform.pool.workers.values() if r.process), None),
            30,
            "the first worker process",
        )
        process = first.process
        assert process is not None
        assert first.process_started is not None
        wait_until(lambda: first.id not in twin.platform.pool.workers, BOUND_S, "its death")
        elapsed = time.monotonic() - first.process_started
        _report(record_property, "never_calls_in", elapsed, "start_to_declared_dead")
        # Dead for the reason the start timeout gives, as the twin's clock measured it. Waited
        # for: the twin's thread records it just after dropping the worker from its pool.
        wait_until(lambda: twin.platform.last_start_failure, 10, "the start failure's reason")
        assert "did not call in within 2 s of starting" in (twin.platform.last_start_failure or "")
        wait_until(lambda: process.poll() is not None, 10, "the silent process to end")
        assert api.get("/health").json()["workers"]["unhealthy"] == 1
        # Replaced after the failed-start back-off (2 s), not in a tight loop.
        wait_until(lambda: twin.platform.pool.workers, 30, "a replacement")
        assert first.id not in twin.platform.pool.workers
        assert api.get(f"/status/{job_id}").json()["status"] == "IN_QUEUE"
