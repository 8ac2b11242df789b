"""Workers' job loops on the twin, with real worker processes: podpulse's fast loop against
the runpod SDK's stock one (``--job-loop``), and progress updates."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from twin_helpers import TESTS, calibrated, small

from podpulse.common.testing import wait_until
from podpulse.twin import RunningTwin, running_twin

pytestmark = pytest.mark.slow


def back_to_back(api: httpx.Client, jobs: int) -> list[dict[str, Any]]:
    """``jobs`` /runsync requests, each sent the moment the previous one answered."""
    bodies = [api.post("/runsync", json={"input": {}}).json() for _ in range(jobs)]
    assert all(body["status"] == "COMPLETED" for body in bodies), bodies
    return bodies


def clockless(**overrides: Any) -> dict[str, Any]:
    """running_twin arguments for a fast worker serving ``clockless_handler`` (its loop's
    fallback wake-up a day away): what it does between jobs, only an event can have woken."""
    handler = overrides.pop("handler", "handler")
    return {
        "settings": small(job_loop="fast", handler=f"clockless_handler:{handler}", **overrides),
        "calibrated": calibrated(),
        "worker_env": {"PYTHONPATH": TESTS},
    }


def test_back_to_back_jobs_on_a_fast_worker_are_taken_and_started_by_events() -> None:
    """One worker at concurrency 1, 50 ms jobs back to back, its loop never woken by its clock:
    all complete, so each job was taken when the previous one freed the slot and started when
    it was taken, with no pause between (the stock loop sleeps most of a second before each).
    How long they wait and run is benchmarks/job_loop.py's to report."""
    with running_twin(**clockless()) as twin, twin.client() as api:
        bodies = back_to_back(api, 20)
    assert len({body["id"] for body in bodies}) == 20
    assert all(body["output"]["model"] == "calibrated" for body in bodies), bodies


def test_the_stock_sdk_loop_still_shows_its_one_second_pause() -> None:
    """--job-loop sdk: back-to-back jobs on one worker wait most of a second in the queue, as
    plain SDK workers do on hosted RunPod; the twin reproduces that."""
    with running_twin(small(job_loop="sdk"), calibrated(exec_ms=50)) as twin, twin.client() as api:
        # The first job finds the worker parked in a job-take; the ones after it do not.
        delays = [body["delayTime"] for body in back_to_back(api, 5)[1:]]
    assert statistics.median(delays) > 500, delays


def test_a_fast_worker_at_concurrency_2_keeps_both_slots_busy() -> None:
    """Two clients back to back on one worker taking 2 jobs at once, its loop never woken by
    its clock: every job returns only once another ran beside it, so both slots stayed busy,
    refilled by events (the stock loop counts a taken job twice and pauses a second when
    full)."""
    bodies: list[dict[str, Any]] = []

    def client(twin: RunningTwin) -> None:
        with twin.client() as api:
            bodies.extend(api.post("/runsync", json={"input": {}}).json() for _ in range(10))

    with running_twin(**clockless(handler="pair", worker_concurrency=2)) as twin:
        threads = [threading.Thread(target=client, args=(twin,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(bodies) == 20
    assert all(body.get("output") == {"paired": True} for body in bodies), bodies


@pytest.mark.parametrize("job_loop", ["fast", "sdk"])
def test_a_progress_update_keeps_the_job_running_and_the_final_result_completes_it(
    job_loop: str, tmp_path: Path
) -> None:
    """runpod.serverless.progress_update posts {"status": "IN_PROGRESS"} to job-done: the job
    stays IN_PROGRESS with the update as its output on /status; the handler's return value
    is the final output, and the worker goes on to the next job."""
    release = tmp_path / "release"
    with (
        running_twin(
            small(handler="progress_handler:handler", job_loop=job_loop),
            calibrated(),
            worker_env={"PYTHONPATH": TESTS},
        ) as twin,
        twin.client() as api,
    ):
        job_id = api.post("/run", json={"input": {"release": str(release)}}).json()["id"]
        shown = wait_until(
            lambda: (body := api.get(f"/status/{job_id}").json()).get("output") and body,
            20,
            "the progress update on /status",
        )
        assert shown["status"] == "IN_PROGRESS"
        assert shown["output"] == "25%"
        release.touch()
        final = wait_until(
            lambda: (
                (body := api.get(f"/status/{job_id}").json())["status"] != "IN_PROGRESS" and body
            ),
            20,
            "the final result",
        )
        assert final["status"] == "COMPLETED", final
        assert final["output"] == {"result": "done"}
        # The slot was freed by the result, not by the progress update: the worker serves on.
        after = api.post("/runsync", json={"input": {"release": str(release)}}).json()
        assert after["status"] == "COMPLETED"
        assert after["output"] == {"result": "done"}


@pytest.mark.parametrize("job_loop", ["fast", "sdk"])
def test_sigterm_drains_the_running_job_then_the_worker_exits(job_loop: str) -> None:
    """SIGTERM to a worker mid-job: the job still completes with its output, the worker exits
    without taking another one, and the twin's replacement runs the next job."""
    settings = small(job_loop=job_loop, take_hold_s=2, stop_hold_s=2)
    with running_twin(settings, calibrated()) as twin, twin.client() as api:
        job_id = api.post("/run", json={"input": {"exec_ms": 1500}}).json()["id"]
        running = wait_until(
            lambda: (
                (body := api.get(f"/status/{job_id}").json())["status"] == "IN_PROGRESS" and body
            ),
            10,
        )
        record = twin.platform.pool.workers[running["workerId"]]
        assert record.process is not None
        record.process.send_signal(signal.SIGTERM)
        following = api.post("/run", json={"input": {"exec_ms": 5}}).json()["id"]
        final = wait_until(
            lambda: (
                (body := api.get(f"/status/{job_id}").json())["status"] != "IN_PROGRESS" and body
            ),
            20,
        )
        assert final["status"] == "COMPLETED", final
        assert final["output"]["model"] == "calibrated"
        wait_until(lambda: record.process is not None and record.process.poll() is not None, 20)
        assert record.process.returncode == 0
        done = wait_until(
            lambda: (
                (body := api.get(f"/status/{following}").json())["status"] == "COMPLETED" and body
            ),
            30,
        )
        assert done["workerId"] != running["workerId"]


def test_an_idle_fast_worker_sleeps_in_its_waits() -> None:
    """A fast worker parked between jobs is asleep, not polling: sampled again and again, the
    process is sleeping (a loop that spun would be running or runnable). Its share of a core
    is benchmarks/job_loop.py's to report."""
    with running_twin(small(job_loop="fast"), calibrated()) as twin, twin.client() as api:
        assert api.post("/runsync", json={"input": {}}).json()["status"] == "COMPLETED"
        [record] = twin.platform.pool.workers.values()
        assert record.process is not None
        worker = psutil.Process(record.process.pid)
        # Parked: its job-take long-poll is waiting at the twin.
        wait_until(lambda: twin.platform.queue.waiting_takers() == 1, 30, "a parked job-take")
        states = []
        for _ in range(40):
            states.append(worker.status())
            time.sleep(0.025)
    # A wake-up once a second may catch a sample or two running; a spinning loop, all of them.
    assert states.count(psutil.STATUS_SLEEPING) >= 30, states
