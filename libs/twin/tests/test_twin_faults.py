"""Worker deaths on the twin: jobs fail with a clear error, never hang; the pool recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs
from twin_helpers import calibrated, small, start_job

from podpulse.common.testing import wait_until
from podpulse.twin import running_twin

pytestmark = pytest.mark.slow


def test_worker_killed_mid_job_fails_the_job_and_is_replaced() -> None:
    """SIGKILL on a busy worker: its job FAILS naming the worker; a new one takes over."""
    with running_twin(small(), calibrated()) as twin, twin.client() as api:
        running = start_job(api, {"exec_ms": 30_000})
        job_id = running["id"]
        record = twin.platform.pool.workers[running["workerId"]]
        assert record.process is not None
        os.kill(record.process.pid, signal.SIGKILL)
        failed = wait_until(
            lambda: (b := api.get(f"/status/{job_id}").json())["status"] == "FAILED" and b,
            10,
            "the job to fail",
        )
        assert running["workerId"] in failed["error"]
        assert "SIGKILL" in failed["error"]
        # workersMin 1 brings a fresh worker, which serves the next job.
        body = api.post("/runsync", json={"input": {"exec_ms": 5}}).json()
        assert body["status"] == "COMPLETED"
        assert body["workerId"] != running["workerId"]


def test_handler_crash_fails_the_job_with_the_exit_code() -> None:
    """A handler that exits the process mid-job ends that job FAILED, with the exit code."""
    with running_twin(small(), calibrated()) as twin, twin.client() as api:
        body = api.post("/runsync", json={"input": {"crash": True, "exec_ms": 200}}).json()
        assert body["status"] == "FAILED"
        assert "exited with code 17" in body["error"]
        assert api.post("/runsync", json={"input": {}}).json()["status"] == "COMPLETED"


def test_streaming_handler_output_arrives_through_stream() -> None:
    """A generator handler's partial outputs come back from /stream, then the aggregate."""
    settings = small(handler="calibrated-stream")
    with running_twin(settings, calibrated()) as twin, twin.client() as api:
        job_input = {"stream": True, "output_tokens": 4, "first_token_ms": 0, "token_ms": 100}
        job_id = api.post("/run", json={"input": job_input}).json()["id"]
        chunks: list[dict[str, object]] = []

        def drained() -> bool:
            body = api.get(f"/stream/{job_id}").json()
            chunks.extend(c["output"] for c in body["stream"])
            return body["status"] == "COMPLETED"

        wait_until(drained, 20, "the stream to finish")
        assert [c["text"] for c in chunks[:4]] == ["t0 ", "t1 ", "t2 ", "t3 "]
        assert chunks[4]["done"] is True
        final = api.get(f"/status/{job_id}").json()
        assert final["output"] == chunks


def test_an_external_sdk_worker_joins_and_serves() -> None:
    """An SDK worker the twin did not start, given the platform env, takes and runs jobs."""
    with running_twin(small(workers_min=0), calibrated(), wait_ready=False) as twin:
        env = {**os.environ, **twin.platform.external_worker_env("external-1")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "podpulse.twin.worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(lambda: twin.platform.queue.waiting_takers() >= 1, 30, "external worker")
            with twin.client() as api:
                body = api.post("/runsync", json={"input": {"exec_ms": 5}}).json()
            assert body["status"] == "COMPLETED"
            assert body["workerId"] == "external-1"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_cancel_stops_the_running_job_on_its_worker_and_drops_a_queued_one() -> None:
    """Cancel: the running job stops on its one-slot worker (job-stop), the queued one drops."""
    # Cancelling right after the take can beat the SDK's 100 ms job pick-up; the heartbeat
    # (every second here) then shows the job still running and the stop is sent again.
    with (
        running_twin(small(scaler_value=60, ping_interval_ms=1000), calibrated()) as twin,
        twin.client() as api,
    ):
        running = api.post("/run", json={"input": {"exec_ms": 60_000}}).json()["id"]
        wait_until(lambda: api.get(f"/status/{running}").json()["status"] == "IN_PROGRESS", 10)
        queued = api.post("/run", json={"input": {"exec_ms": 5}}).json()["id"]
        assert api.get(f"/status/{queued}").json()["status"] == "IN_QUEUE"
        assert api.post(f"/cancel/{queued}").json()["status"] == "CANCELLED"
        assert api.post(f"/cancel/{running}").json()["status"] == "CANCELLED"
        # One worker, one slot: the next job runs only once the 60 s job was really stopped,
        # so it completes inside a 30 s wait only if the cancel stopped that job.
        body = api.post("/runsync?wait=30000", json={"input": {"exec_ms": 5}}).json()
        assert body["status"] == "COMPLETED", body
        assert api.get(f"/status/{queued}").json()["status"] == "CANCELLED"
        assert api.get("/health").json()["jobs"]["inQueue"] == 0


def test_refresh_worker_replaces_the_worker_after_the_job() -> None:
    """A handler asking refresh_worker completes its job, then a fresh worker serves."""
    with running_twin(small(), calibrated()) as twin, twin.client() as api:
        first = api.post("/runsync", json={"input": {"refresh": True, "exec_ms": 5}}).json()
        assert first["status"] == "COMPLETED"
        assert "refresh_worker" not in first["output"]
        wait_until(lambda: first["workerId"] not in twin.platform.pool.workers, 15, "old worker")
        second = api.post("/runsync", json={"input": {"exec_ms": 5}}).json()
        assert second["status"] == "COMPLETED"
        assert second["workerId"] != first["workerId"]


def test_a_worker_that_cannot_start_is_retried_with_backoff_and_jobs_wait() -> None:
    """A handler that cannot load: /health shows unhealthy, restarts back off, jobs stay queued."""
    with (
        running_twin(small(handler="no_such_module:handler"), wait_ready=False) as twin,
        twin.client() as api,
    ):
        job = api.post("/run", json={"input": {}}).json()["id"]
        wait_until(lambda: api.get("/health").json()["workers"]["unhealthy"] == 1, 30)
        failed_at = time.monotonic()
        logs = list(twin.settings.log_dir.glob("twin-*.log"))
        assert len(logs) == 1
        assert "cannot be loaded" in logs[0].read_text()
        # The next start waits out the first back-off (2 s); without it the twin would
        # restart within one tick (50 ms).
        wait_until(lambda: len(list(twin.settings.log_dir.glob("twin-*.log"))) == 2, 30)
        assert time.monotonic() - failed_at >= 1.5
        assert api.get(f"/status/{job}").json()["status"] == "IN_QUEUE"


def test_a_failed_start_puts_its_last_lines_on_the_console_and_a_ready_worker_says_so() -> None:
    """The cause of a failed start is in the twin's own log line, not only in the worker's log
    file; a worker that calls in is announced as ready."""
    with (
        capture_logs() as events,
        running_twin(small(handler="no_such_module:handler"), wait_ready=False),
    ):
        failed = wait_until(
            lambda: next((e for e in events if e["event"] == "worker failed to start"), None),
            30,
            "the failed start",
        )
    assert "cannot be loaded" in failed["last_output"], failed
    with capture_logs() as events, running_twin(small(), calibrated()) as twin:
        (ready,) = [e for e in events if e["event"] == "worker ready"]
        assert ready["worker_id"] in twin.platform.pool.workers


def test_a_bare_python_worker_command_is_the_twins_own_interpreter() -> None:
    """--worker-command "python -m ..." runs in podpulse's interpreter even where the workers'
    PATH finds no python, or another one (no activated virtual environment)."""
    settings = small(worker_command="python -m podpulse.twin.worker")
    assert settings.worker_command == [sys.executable, "-m", "podpulse.twin.worker"]
    assert small(worker_command=["python3", "-V"]).worker_command == [sys.executable, "-V"]
    with (
        running_twin(settings, calibrated(), worker_env={"PATH": "/nonexistent"}) as twin,
        twin.client() as api,
    ):
        assert api.post("/runsync", json={"input": {}}).json()["status"] == "COMPLETED"
