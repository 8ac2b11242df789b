"""The twin's own stop: jobs it leaves behind end FAILED saying the twin stopped, at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from twin_helpers import calibrated, small, start_job

from podpulse.common.net import free_port
from podpulse.common.testing import wait_until
from podpulse.twin import DEFAULT_API_KEY, running_twin

PODPULSE = str(Path(sys.executable).with_name("podpulse"))


def test_jobs_left_at_shutdown_fail_naming_the_twin() -> None:
    """A running job fails 'the twin stopped while the job ran' (not as its stopped worker's
    exit), and a queued one says the twin stopped before a worker took it."""
    with running_twin(small(), calibrated()) as twin, twin.client() as api:
        running = start_job(api, {"exec_ms": 60_000})["id"]
        queued = api.post("/run", json={"input": {}}).json()["id"]
        assert api.get(f"/status/{queued}").json()["status"] == "IN_QUEUE"
        jobs = twin.platform.queue.jobs
    assert (jobs[running].status.value, jobs[running].error) == (
        "FAILED",
        "the twin stopped while the job ran",
    )
    assert (jobs[queued].status.value, jobs[queued].error) == (
        "FAILED",
        "the twin stopped before a worker took the job",
    )


def test_a_waiting_runsync_answers_when_serve_is_interrupted(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Ctrl-C on `podpulse twin serve` while a /runsync waits on its job: the client gets the
    job FAILED with the twin's stop as the reason, not a dropped connection."""
    port = free_port()
    output = tmp_path / "serve.out"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [PODPULSE, "twin", "serve", "--port", str(port), "--workers-min", "1",
             "--workers-max", "1", "--log-dir", str(tmp_path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v2/podpulse-twin"
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    answer: dict[str, Any] = {}

    def health() -> dict[str, Any] | None:
        assert proc.poll() is None, output.read_text()
        try:
            body: dict[str, Any] = httpx.get(f"{url}/health", headers=headers).json()
        except httpx.TransportError:
            return None
        return body

    def runsync() -> None:
        try:
            reply = httpx.post(
                f"{url}/runsync", json={"input": {"exec_ms": 60_000}}, headers=headers, timeout=60
            )
            answer["body"] = reply.json()
        except (httpx.HTTPError, ValueError) as exc:  # a dropped or empty reply
            answer["error"] = repr(exc)

    client = threading.Thread(target=runsync)
    interrupted = False
    try:
        wait_until(lambda: (h := health()) and h["workers"]["idle"] == 1, 60, "the worker")
        client.start()
        wait_until(lambda: (h := health()) and h["jobs"]["inProgress"] == 1, 30, "the job")
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        interrupted = True
        client.join(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        # One Ctrl-C only: a second one makes uvicorn abandon its clean shutdown.
        if not interrupted:
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
    record_property("interrupt_to_failed_s", round(elapsed, 2))
    assert "body" in answer, answer
    assert answer["body"]["status"] == "FAILED"
    assert answer["body"]["error"] == "the twin stopped while the job ran"
    assert code in (0, 130)  # uvicorn re-raises the interrupt after a clean shutdown
    assert "Traceback" not in output.read_text()
