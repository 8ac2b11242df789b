"""The prober's Celery tasks: thin wrappers that build a spec and call ``run_probe``.

Every task claims its run id before it sends a request (podpulse.prober._locks), so a message
delivered twice -- the broker's visibility timeout ran out under a long soak, or a worker died --
runs once. The run id comes from the message's task id, which both deliveries share.

A run's summary is written before its ``ProbeRunCompleted`` event is published, and the publish
is retried a bounded number of times: with Redis down the results are on disk regardless and
the task ends cleanly, logging that the event was not sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import redis
import structlog
from celery import Celery, Task
from kombu.exceptions import OperationalError

from podpulse.common.events import ProbeRunCompleted, publish

from ._locks import RunClaim, claim_run, lease_ttl_s, while_held
from ._probe import ProbeKind, ProbeSpec, check_sharding, merge_stats, run_probe, write_summary
from ._results import read_summary, run_dir, write_json
from ._shards import ShardBoard, merge_shards, stats_from_json
from ._summary import RunStats
from ._target import Target, resolve_target
from .app import app, common_settings, settings

__all__ = [
    "PUBLISH_DELAYS_S",
    "load",
    "load_shard",
    "load_sharded",
    "merge_load_shards",
    "publish_completed",
    "smoke",
    "soak",
    "sweep",
]

# Waits between publish attempts: about half a minute of Redis outage is ridden out.
PUBLISH_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# How far ahead a sharded run's measured part starts, so every shard is picked up in time.
SHARD_LEAD_S = 5.0
_BUS_ERRORS = (OperationalError, redis.RedisError, OSError)

T = TypeVar("T")

_log = structlog.get_logger(__name__)


@cache
def _redis() -> redis.Redis:
    # One client per process (built lazily, so a prefork child builds its own after the fork).
    return redis.Redis.from_url(
        common_settings.redis_url, socket_timeout=10, socket_connect_timeout=5
    )


@app.task(name="podpulse.prober.smoke", bind=True)  # type: ignore[untyped-decorator]
def smoke(self: Task, **changes: Any) -> dict[str, Any] | None:
    """A smoke probe (settings' smoke size), its verdict and a ProbeRunCompleted event."""
    return _run_and_publish(_spec("smoke", self.request.id, changes))


@app.task(name="podpulse.prober.load", bind=True)  # type: ignore[untyped-decorator]
def load(self: Task, **changes: Any) -> dict[str, Any] | None:
    """A load test; keyword arguments override ProbeSpec fields (runs, concurrency, ...)."""
    return _run_and_publish(_spec("load", self.request.id, changes))


@app.task(name="podpulse.prober.sweep", bind=True)  # type: ignore[untyped-decorator]
def sweep(self: Task, **changes: Any) -> dict[str, Any] | None:
    """A concurrency sweep (settings' levels), with the recommended level in its summary."""
    return _run_and_publish(_spec("sweep", self.request.id, changes))


@app.task(name="podpulse.prober.soak", bind=True)  # type: ignore[untyped-decorator]
def soak(self: Task, **changes: Any) -> dict[str, Any] | None:
    """A soak (settings' duration and concurrency) with its windowed verdict."""
    return _run_and_publish(_spec("soak", self.request.id, changes))


@app.task(name="podpulse.prober.load_sharded", bind=True)  # type: ignore[untyped-decorator]
def load_sharded(
    self: Task, shards: int, lead_s: float = SHARD_LEAD_S, **changes: Any
) -> dict[str, Any] | None:
    """Split one load run over *shards* prober workers: send one load_shard task per shard.

    Returns at once; the shard that finishes last sends merge_load_shards. The shards share
    the spec, so its ``start_at`` (now + *lead_s*) lines their schedules up.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    spec = _spec("load", self.request.id, {"start_at": time.time() + lead_s} | changes)
    check_sharding(spec, shards)  # refused here, not by every shard after the lead
    with claim_run(_redis(), f"{spec.run_id}.dispatch", ttl_s=lease_ttl_s(lead_s)) as claim:
        if not claim.owned:
            return None
        body = spec.model_dump(mode="json")
        for shard in range(shards):
            load_shard.apply_async(
                kwargs={"spec": body, "shard": shard, "shards": shards},
                task_id=f"{spec.run_id}.shard{shard}",
            )
    _log.info("probe_run_sharded", run_id=spec.run_id, shards=shards)
    return {"run_id": spec.run_id, "shards": shards}


@app.task(name="podpulse.prober.load_shard")  # type: ignore[untyped-decorator]
def load_shard(spec: dict[str, Any], shard: int, shards: int) -> dict[str, Any] | None:
    """Run shard *shard* of *shards* of *spec*; post its statistics; the last one merges.

    However the shard ends it posts to the board -- its statistics, or a failure marker when
    it raised -- so the run's set always completes and its merge is sent exactly once.
    """
    probe = ProbeSpec.model_validate(spec)
    name = f"{probe.run_id}.shard{shard}"
    # Without a target the merge still needs an endpoint id for the event.
    endpoint_id = common_settings.runpod_endpoint_id or "unknown"
    with claim_run(_redis(), name, ttl_s=lease_ttl_s(_expected_s(probe))) as claim:
        if not claim.owned:
            return None
        outcome: Mapping[int, RunStats] | str = "ended before posting its statistics"
        complete: bool | None = None
        try:
            with _target() as target:
                endpoint_id = target.endpoint_id
                outcome = asyncio.run(_run_shard(probe, target, shard, shards, claim))
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            _log.exception("probe_shard_failed", run_id=probe.run_id, shard=shard)
            raise
        finally:
            complete = _post_shard(probe, shard, shards, outcome, token=claim.token)
            if complete:
                _send_merge(spec, shards, endpoint_id, run_id=probe.run_id)
    return {"run_id": probe.run_id, "shard": shard, "complete": bool(complete)}


async def _run_shard(
    probe: ProbeSpec, target: Target, shard: int, shards: int, claim: RunClaim
) -> dict[int, RunStats]:
    run = run_probe(
        probe, target, settings.results_dir, settings=settings, shard=shard, shards=shards
    )
    return await while_held(claim, run)


def _post_shard(
    probe: ProbeSpec, shard: int, shards: int, outcome: Mapping[int, RunStats] | str, *, token: str
) -> bool | None:
    """Post the shard's statistics or failure; True when it completed the set, None if lost."""
    board = ShardBoard(_redis(), probe.run_id)

    def post() -> bool:
        if isinstance(outcome, str):
            return board.post_failure(shard, outcome, shards, token=token)
        return board.post(shard, outcome, shards, token=token)

    complete = _with_retries(post, what="shard_stats", run_id=probe.run_id)
    if complete is None:
        _log.error(
            "probe_shard_not_posted",
            run_id=probe.run_id,
            shard=shard,
            consequence="the run's merge will not run: no summary.json, no event",
        )
    else:
        _log.info(
            "probe_shard_posted",
            run_id=probe.run_id,
            shard=shard,
            failed=isinstance(outcome, str),
            completes_run=complete,
        )
    return complete


def _send_merge(spec: dict[str, Any], shards: int, endpoint_id: str, *, run_id: str) -> None:
    sent = _with_retries(
        lambda: merge_load_shards.apply_async(
            kwargs={"spec": spec, "shards": shards, "endpoint_id": endpoint_id}
        ),
        what="merge_task",
        run_id=run_id,
    )
    if sent is None:
        _log.error(
            "probe_run_merge_not_sent",
            run_id=run_id,
            consequence="no summary.json, no event; the shards' stats are on the board and disk",
        )


@app.task(name="podpulse.prober.merge_load_shards")  # type: ignore[untyped-decorator]
def merge_load_shards(spec: dict[str, Any], shards: int, endpoint_id: str) -> dict[str, Any] | None:
    """Merge every shard's RunStats exactly, write the one summary, publish the event.

    When shards failed the summary is marked interrupted, covers what the other shards (and
    the failed ones' partial stats-shard files) measured, names the failed and missing shards
    under ``shards``, and does not pass; the event is published all the same.
    """
    probe = ProbeSpec.model_validate(spec)
    folder = run_dir(settings.results_dir, probe.run_id)
    with claim_run(_redis(), probe.run_id, ttl_s=lease_ttl_s(0)) as claim:
        if not claim.owned:
            return None
        posted, failed = ShardBoard(_redis(), probe.run_id).read()
        parts = _shard_parts(posted, folder, shards)
        missing = sorted(set(range(shards)) - set(parts))
        interrupted = bool(failed or missing)
        merged = (
            merge_stats([parts[i] for i in sorted(parts)])
            if interrupted
            else merge_shards(parts, shards)
        )
        summary = write_summary(
            settings.results_dir,
            probe,
            merged,
            settings,
            interrupted=interrupted,
            endpoint_id=endpoint_id,
        )
        if interrupted:
            summary = _mark_incomplete(folder, summary, shards, failed, missing)
    published = publish_completed(app, probe, summary, folder, endpoint_id)
    return _outcome(probe, summary, folder, published=published)


def _mark_incomplete(
    folder: Path,
    summary: dict[str, Any],
    shards: int,
    failed: Mapping[int, str],
    missing: Sequence[int],
) -> dict[str, Any]:
    # Missing: no statistics at all, so none of that shard's requests are in the summary.
    summary |= {
        "passed": False,  # part of the load was not sent or not counted: no verdict holds
        "shards": {
            "count": shards,
            "failed": {str(shard): reason for shard, reason in sorted(failed.items())},
            "missing": list(missing),
        },
    }
    write_json(folder / "summary.json", summary)
    _log.error(
        "probe_run_shards_failed",
        run_id=summary.get("run_id"),
        failed=sorted(failed),
        missing=list(missing),
        reasons=dict(failed),
    )
    return summary


def publish_completed(
    celery_app: Celery,
    spec: ProbeSpec,
    summary: Mapping[str, Any],
    folder: Path,
    endpoint_id: str,
    *,
    delays_s: Sequence[float] = PUBLISH_DELAYS_S,
) -> bool:
    """Publish the run's ProbeRunCompleted; False (logged) when the bus stayed unreachable."""
    event = ProbeRunCompleted(
        run_id=spec.run_id,
        kind=spec.kind,
        endpoint_id=endpoint_id,
        summary=dict(summary),
        slo_passed=bool(summary.get("passed")),
        results_path=str(folder),
    )
    sent = _with_retries(
        lambda: publish(celery_app, event), what="event", run_id=spec.run_id, delays_s=delays_s
    )
    return sent is not None


def _run_and_publish(spec: ProbeSpec) -> dict[str, Any] | None:
    folder = run_dir(settings.results_dir, spec.run_id)
    with claim_run(_redis(), spec.run_id, ttl_s=lease_ttl_s(_expected_s(spec))) as claim:
        if not claim.owned:
            return None
        with _target() as target:
            run = run_probe(spec, target, settings.results_dir, settings=settings)
            asyncio.run(while_held(claim, run))
            endpoint_id = target.endpoint_id
    # run_probe wrote summary.json; the file is what the event reports.
    summary = read_summary(folder)
    published = publish_completed(app, spec, summary, folder, endpoint_id)
    return _outcome(spec, summary, folder, published=published)


def _spec(kind: ProbeKind, task_id: str | None, changes: Mapping[str, Any]) -> ProbeSpec:
    # A beat-sent message carries no run id; its task id is the one name that every delivery
    # of the message shares, so it keys the claim. An explicit run_id in changes wins.
    named = {"run_id": f"{kind}-{task_id}"} if task_id else {}
    return ProbeSpec.scheduled(kind, settings, **(named | dict(changes)))


@contextmanager
def _target() -> Iterator[Target]:
    with resolve_target(settings, common_settings) as target:
        yield target


def _expected_s(spec: ProbeSpec) -> float:
    """The longest the run can take: every request of every level up to its timeout."""
    total = 0.0
    for level in spec.concurrency:
        if spec.duration_s is not None:
            total += spec.duration_s
        else:
            waves = (spec.runs or 0) / max(level, 1)
            total += waves * spec.timeout_s
    return total + spec.warmup * spec.timeout_s


def _shard_parts(
    posted: dict[int, dict[int, RunStats]], folder: Path, shards: int
) -> dict[int, dict[int, RunStats]]:
    # A shard without statistics on the board -- Redis restarted without persistence after it
    # posted, or it failed and wrote its partial stats on the way out -- is read from the
    # stats-shard<i>.json it wrote next to its rows.
    for shard in set(range(shards)) - set(posted):
        path = folder / f"stats-shard{shard}.json"
        if path.exists():
            posted[shard] = stats_from_json(json.loads(path.read_text(encoding="utf-8")))
    return posted


def _with_retries(
    send: Callable[[], T], *, what: str, run_id: str, delays_s: Sequence[float] = PUBLISH_DELAYS_S
) -> T | None:
    """``send()``, retried after each of *delays_s* on a bus error; None when all failed."""
    for attempt, delay in enumerate((*delays_s, None), start=1):
        try:
            return send()
        except _BUS_ERRORS as exc:
            if delay is None:
                _log.error(
                    "probe_run_bus_unreachable",
                    run_id=run_id,
                    what=what,
                    attempts=attempt,
                    error=repr(exc),
                )
                return None
            _log.warning("probe_run_bus_retry", run_id=run_id, what=what, error=repr(exc))
            time.sleep(delay)
    return None  # pragma: no cover - the loop returns on its last pass


def _outcome(
    spec: ProbeSpec, summary: Mapping[str, Any], folder: Path, *, published: bool
) -> dict[str, Any]:
    _log.info(
        "probe_run_completed",
        run_id=spec.run_id,
        kind=spec.kind,
        passed=summary.get("passed"),
        requests=summary.get("requests"),
        published=published,
    )
    return {
        "run_id": spec.run_id,
        "passed": summary.get("passed"),
        "results_path": str(folder),
        "published": published,
    }
