"""A probe run as a Celery task's body: claim its run id, check its target, run it, publish.

Every run claims its run id before it sends a request (podpulse.prober._locks), so a message
delivered twice -- the broker's visibility timeout ran out under a long soak, or a worker died
-- runs once. A run's summary is written before its ``ProbeRunCompleted`` event is published,
and the publish is retried a bounded number of times: with Redis down the results are on disk
regardless and the task ends cleanly, logging that the event was not sent.

The target is ``PROBER_TARGET`` and nothing else: a hosted target without an endpoint id or a
key fails the task with the reason, before any claim, and publishes nothing.

The steps the sharded tasks share (podpulse.prober._celery_shards) are here too: the target
check, the claim's expected length, the bus retry, the event and the task's outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
from celery import Celery

from podpulse.common.events import ProbeRunCompleted, publish
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.retry import Retry
from podpulse.common.summary import RunSummary

from ._context import BUS_ERRORS, ProberContext
from ._locks import claim_run, lease_ttl_s, while_held
from ._probe import run_probe
from ._results_dir import run_dir
from ._target import TargetError, hosted_target, open_target

__all__ = [
    "check_target",
    "expected_s",
    "publish_completed",
    "run_and_publish",
    "task_outcome",
    "with_bus",
]

T = TypeVar("T")

_log = structlog.get_logger(__name__)


def check_target(context: ProberContext, run_id: str) -> None:
    """Raise TargetError (logged) when the configured target cannot be probed."""
    if context.settings.target != "hosted":
        return
    try:
        hosted_target(context.common)
    except TargetError as exc:
        _log.error("probe_run_refused", run_id=run_id, target="hosted", reason=str(exc))
        raise


def expected_s(spec: ProbeSpec) -> float:
    """The longest the run can take: every request of every level up to its timeout.

    A run's claim lease is this plus grace (podpulse.prober._locks.lease_ttl_s).
    """
    total = 0.0
    for level in spec.concurrency:
        if spec.duration_s is not None:
            total += spec.duration_s
        else:
            waves = (spec.runs or 0) / max(level, 1)
            total += waves * spec.timeout_s
    return total + spec.warmup * spec.timeout_s


def with_bus(retry: Retry, send: Callable[[], T], *, what: str, run_id: str) -> T | None:
    """``send()`` with the bus retry; None (logged) when Redis stayed unreachable."""

    def warn(_: int, error: BaseException, delay: float) -> None:
        _log.warning(
            "probe_run_bus_retry", run_id=run_id, what=what, error=repr(error), wait_s=delay
        )

    try:
        return retry.call(send, on_retry=warn)
    except BUS_ERRORS as exc:
        _log.error(
            "probe_run_bus_unreachable",
            run_id=run_id,
            what=what,
            attempts=retry.retries + 1,
            error=repr(exc),
        )
        return None


def publish_completed(app: Celery, summary: RunSummary, folder: Path, *, retry: Retry) -> bool:
    """Publish the run's ProbeRunCompleted; False (logged) when the bus stayed unreachable."""
    event = ProbeRunCompleted.of(summary, results_path=str(folder))
    sent = with_bus(retry, lambda: publish(app, event), what="event", run_id=summary.run_id)
    return sent is not None


def run_and_publish(app: Celery, context: ProberContext, spec: ProbeSpec) -> dict[str, object]:
    """Run *spec* once on the configured target, then publish its event.

    Returns the task's outcome, or ``{"skipped": ...}`` when another delivery holds the run.
    """
    check_target(context, spec.run_id)
    settings = context.settings
    folder = run_dir(settings.results_dir, spec.run_id)
    ttl_s = lease_ttl_s(expected_s(spec))
    with claim_run(context.redis, spec.run_id, ttl_s=ttl_s) as claim:
        if not claim.owned:
            return {"run_id": spec.run_id, "skipped": claim.state}
        with open_target(
            settings.target, context.common, context.twin, api=spec.api or settings.api
        ) as target:
            run = run_probe(spec, target, settings.results_dir, settings=settings)
            summary = asyncio.run(while_held(claim, run))
    published = publish_completed(app, summary, folder, retry=context.bus_retry)
    return task_outcome(summary, folder, published=published)


def task_outcome(summary: RunSummary, folder: Path, *, published: bool) -> dict[str, object]:
    """Log the finished run; the task's (unstored) return value."""
    _log.info(
        "probe_run_completed",
        run_id=summary.run_id,
        kind=summary.kind,
        target=summary.target.kind,
        passed=summary.passed,
        end_reason=summary.end_reason,
        requests=sum(level.requests for level in summary.levels),
        published=published,
    )
    return {
        "run_id": summary.run_id,
        "target": summary.target.kind,
        "passed": summary.passed,
        "results_path": str(folder),
        "published": published,
    }
