"""Helpers for the twin's tests: small settings, and polling for a condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podpulse.common.testing import wait_until
from podpulse.twin import CalibratedSettings, TwinSettings

# This folder: a worker's PYTHONPATH for the MODULE:FUNC handlers kept beside the tests.
TESTS = str(Path(__file__).parent)


def small(**overrides: Any) -> TwinSettings:
    """A twin sized for tests: one warm worker, quick idle stop and exit, unless told otherwise."""
    fields: dict[str, Any] = {
        "workers_min": 1,
        "workers_max": 1,
        "idle_timeout_s": 5,
        # A worker that just ran a job sits in the SDK's one-second pause before it sees
        # SIGTERM; tests lose nothing when it is killed sooner.
        "stop_grace_s": 0.3,
    }
    return TwinSettings(**{**fields, **overrides})


def calibrated(**overrides: Any) -> CalibratedSettings:
    """Calibrated jobs of a fixed 50 ms unless told otherwise, so tests run quickly."""
    fields: dict[str, Any] = {"exec_ms": 50, "distribution": "fixed"}
    return CalibratedSettings(**{**fields, **overrides})


# The progress text a calibrated job sends when its handler begins ("progress" in its input).
_STARTED = "started"


def start_job(api: Any, job_input: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """POST /run a calibrated job; its /status body once its worker has begun it.

    IN_PROGRESS alone is not proof: it shows from the moment the twin hands the job to a
    parked job-take, and a worker killed before the answer reached it never had the job (the
    twin puts it back in the queue). The job's progress update is.
    """
    job_id = api.post("/run", json={"input": {**job_input, "progress": _STARTED}}).json()["id"]

    def started() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/status/{job_id}").json()
        running = body["status"] == "IN_PROGRESS" and body.get("output") == _STARTED
        return body if running else None

    return wait_until(started, timeout_s, "the worker to start the job")
