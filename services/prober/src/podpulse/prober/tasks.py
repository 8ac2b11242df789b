"""The prober's Celery tasks: thin wrappers that build a spec and hand it to a plain function.

``register(app)`` binds them to an app built by ``create_app``; each reads its settings and
Redis client from that app's context (podpulse.prober._context), and its spec is its kind's
sizes from those settings (:func:`scheduled_spec`) with the message's keyword arguments on top.
The bodies live in podpulse.prober._celery_run (one run) and _celery_shards (a run split over
several workers). A beat-sent message carries no run id: the run id comes from the message's
task id, which every delivery of the message shares, so the run's claim
(podpulse.prober._locks) keys on it and a second delivery is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from celery import Celery, Task

from podpulse.common.probe_spec import ProbeKind, ProbeSpec
from podpulse.common.summary import TargetInfo

from ._celery_run import run_and_publish
from ._celery_shards import (
    LOAD_SHARD_TASK,
    MERGE_TASK,
    SHARD_LEAD_S,
    dispatch_shards,
    merge_and_publish,
    run_one_shard,
)
from ._context import context_of
from ._results_dir import new_run_id
from .settings import ProberSettings

__all__ = ["TASK_NAMES", "register", "scheduled_spec"]

TASK_NAMES = (
    "podpulse.prober.smoke",
    "podpulse.prober.load",
    "podpulse.prober.sweep",
    "podpulse.prober.soak",
    "podpulse.prober.load_sharded",
    LOAD_SHARD_TASK,
    MERGE_TASK,
)


def scheduled_spec(kind: ProbeKind, settings: ProberSettings, **changes: Any) -> ProbeSpec:
    """The spec of a scheduled smoke, sweep or soak (or a load) from the settings."""
    base: dict[str, Any] = {"kind": kind, "run_id": new_run_id(kind)}
    if kind == "smoke":
        base |= {"concurrency": (settings.smoke_concurrency,), "runs": settings.smoke_runs}
    elif kind == "sweep":
        base |= {"concurrency": settings.sweep_levels, "runs": settings.sweep_runs}
    elif kind == "soak":
        base |= {
            "concurrency": (settings.soak_concurrency,),
            "duration_s": settings.soak_duration_s,
            "window_s": settings.soak_window_s,
        }
    else:
        base |= {"runs": settings.sweep_runs}
    base |= {"warmup": settings.warmup, "timeout_s": settings.timeout_s}
    return ProbeSpec.model_validate(base | changes)


def _spec(task: Task, kind: ProbeKind, changes: Mapping[str, Any]) -> ProbeSpec:
    # An explicit run_id in changes wins over the task id's.
    task_id = task.request.id
    named = {"run_id": f"{kind}-{task_id}"} if task_id else {}
    return scheduled_spec(kind, context_of(task.app).settings, **(named | dict(changes)))


def register(app: Celery) -> None:
    """Define the prober's tasks on *app* (built by ``create_app``, with a context)."""

    @app.task(name="podpulse.prober.smoke", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def smoke(self: Task, **changes: Any) -> dict[str, object]:
        """A smoke probe (settings' smoke size), its verdict and a ProbeRunCompleted event."""
        return run_and_publish(self.app, context_of(self.app), _spec(self, "smoke", changes))

    @app.task(name="podpulse.prober.load", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def load(self: Task, **changes: Any) -> dict[str, object]:
        """A load test; keyword arguments override ProbeSpec fields (runs, concurrency, ...)."""
        return run_and_publish(self.app, context_of(self.app), _spec(self, "load", changes))

    @app.task(name="podpulse.prober.sweep", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def sweep(self: Task, **changes: Any) -> dict[str, object]:
        """A concurrency sweep (settings' levels), with the recommended level in its summary."""
        return run_and_publish(self.app, context_of(self.app), _spec(self, "sweep", changes))

    @app.task(name="podpulse.prober.soak", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def soak(self: Task, **changes: Any) -> dict[str, object]:
        """A soak (settings' duration and concurrency) with its windowed verdict."""
        return run_and_publish(self.app, context_of(self.app), _spec(self, "soak", changes))

    @app.task(name="podpulse.prober.load_sharded", bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def load_sharded(
        self: Task, shards: int, lead_s: float = SHARD_LEAD_S, **changes: Any
    ) -> dict[str, object]:
        """Split one load run over *shards* prober workers: one load_shard task per shard.

        Returns at once; the shard that finishes last sends merge_load_shards. The shards
        share the spec, so its ``start_at`` (now + *lead_s*) lines their schedules up.
        """
        spec = _spec(self, "load", {"start_at": time.time() + lead_s} | changes)
        return dispatch_shards(self.app, context_of(self.app), spec, shards)

    @app.task(name=LOAD_SHARD_TASK, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def load_shard(self: Task, spec: dict[str, Any], shard: int, shards: int) -> dict[str, object]:
        """Run shard *shard* of *shards* of *spec*; post its statistics; the last one merges."""
        probe = ProbeSpec.model_validate(spec)
        return run_one_shard(self.app, context_of(self.app), probe, shard, shards)

    @app.task(name=MERGE_TASK, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def merge_load_shards(
        self: Task, spec: dict[str, Any], shards: int, target: dict[str, Any] | None = None
    ) -> dict[str, object]:
        """Merge every shard's statistics exactly, write the one summary, publish the event."""
        probe = ProbeSpec.model_validate(spec)
        where = None if target is None else TargetInfo.model_validate(target)
        return merge_and_publish(self.app, context_of(self.app), probe, shards, where)
