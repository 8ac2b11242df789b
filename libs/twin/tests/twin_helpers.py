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
