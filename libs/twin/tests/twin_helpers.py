"""Helpers for the twin's tests: small settings, and polling for a condition."""

from __future__ import annotations

from typing import Any, TypeVar

from podpulse.twin import CalibratedSettings, TwinSettings

T = TypeVar("T")


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
STARTED = "started"


def wait_started(api: Any, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The /status body of a job its worker has begun (sent with ``"progress": STARTED``).

    IN_PROGRESS alone is not proof: it shows from the moment the twin hands the job to a
    parked job-take, and a worker killed before the answer reached it never had the job (the
    twin puts it back in the queue).
    """
    from podpulse.common.testing import wait_until

    def started() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/status/{job_id}").json()
        return body if body["status"] == "IN_PROGRESS" and body.get("output") == STARTED else None

    return wait_until(started, timeout_s, "the worker to start the job")
