"""One run split over several prober workers as Celery tasks, its shards' statistics pooled.

How a spec splits and how the shards' statistics merge exactly is podpulse.prober._shards; this
is where the shards run and how their statistics reach the one merge. Collecting the shards
needs no Celery result backend (the bus has none on purpose: events are fire-and-forget, and a
chord would make every shard's result a Redis key the backend owns). Each shard writes its
``RunStats`` JSON into one Redis hash per run (:class:`ShardBoard`), or a failure marker when
it raised, so every shard that ran counts towards the set; the post that completes the set, and
only that one, sends the merge task. No worker ever blocks waiting for others, so k shards on k
worker processes cannot deadlock behind a waiting coordinator.

The three task bodies: :func:`dispatch_shards` (one message per shard, all sharing a
``start_at`` a little ahead), :func:`run_one_shard` (run, post, maybe send the merge) and
:func:`merge_and_publish` (one summary, marked interrupted when shards failed or went
missing, and one event).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
import structlog
from celery import Celery

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.summary import ShardInfo, TargetInfo

from ._celery_run import check_target, expected_s, publish_completed, task_outcome, with_bus
from ._context import ProberContext
from ._locks import RunClaim, claim_run, lease_ttl_s, while_held
from ._probe import run_shard
from ._results_dir import TARGET_FILE, read_target, run_dir
from ._run_stats import RunStats
from ._shards import check_sharding, merge_shards, merge_stats, stats_from_json, stats_to_json
from ._summarize import write_summary
from ._target import Target, open_target

__all__ = [
    "BOARD_TTL_S",
    "LOAD_SHARD_TASK",
    "MERGE_TASK",
    "SHARD_LEAD_S",
    "ShardBoard",
    "dispatch_shards",
    "merge_and_publish",
    "run_one_shard",
]

LOAD_SHARD_TASK = "podpulse.prober.load_shard"
MERGE_TASK = "podpulse.prober.merge_load_shards"
# How far ahead a sharded run's measured part starts, so every shard is picked up in time.
SHARD_LEAD_S = 5.0

_log = structlog.get_logger(__name__)

# The board outlives any plausible gap between the first and the last shard of a run.
BOARD_TTL_S = 2 * 24 * 3600
_BOARD_PREFIX = "podpulse:prober:shards:"
_FAILED = "failed"  # a failure marker's one key; a stats post's keys are concurrency levels
# Post a shard's entry; 1 when the set is complete and this post takes the merge-sent flag.
# The flag holds the poster's token, so a retried post whose first attempt went through (its
# reply lost) still learns that it completed the set, and any other post learns it did not.
_POST = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[5], 'NX', 'EX', ARGV[4]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[5] then return 1 end
return 0
"""


class ShardBoard:
    """Where a run's shards leave their statistics: one Redis hash, shard -> RunStats JSON."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.key = f"{_BOARD_PREFIX}{run_id}"

    def post(
        self, shard: int, stats: Mapping[int, RunStats], shards: int, *, token: str | None = None
    ) -> bool:
        """Record *shard*'s statistics; True when this post completed the set of *shards*.

        Idempotent (HSETNX): a shard posted twice keeps its first entry, and exactly one post
        completes the set. Retries of one post pass the same *token* (default: a fresh one),
        so a retry whose first attempt completed the set unseen still returns True.
        """
        return self._post(shard, stats_to_json(stats), shards, token)

    def post_failure(
        self, shard: int, reason: str, shards: int, *, token: str | None = None
    ) -> bool:
        """Record that *shard* failed (*reason*); True when this post completed the set."""
        return self._post(shard, {_FAILED: reason}, shards, token)

    def _post(self, shard: int, entry: Mapping[str, Any], shards: int, token: str | None) -> bool:
        done = self.client.eval(
            _POST,
            2,
            self.key,
            f"{self.key}:merge-sent",
            str(shard),
            json.dumps(entry),
            shards,
            BOARD_TTL_S,
            token or uuid.uuid4().hex,
        )
        return bool(done)

    def collect(self) -> dict[int, dict[int, RunStats]]:
        """Every shard's ``{level: RunStats}`` that posted statistics, by shard index."""
        return self.read()[0]

    def read(self) -> tuple[dict[int, dict[int, RunStats]], dict[int, str]]:
        """The posted statistics by shard index, and the failed shards' reasons."""
        raw: Mapping[bytes | str, bytes | str] = self.client.hgetall(self.key)
        stats: dict[int, dict[int, RunStats]] = {}
        failed: dict[int, str] = {}
        for shard, data in raw.items():
            # A damaged entry fails its shard (named in the summary); it never sinks the merge.
            try:
                entry = json.loads(data)
                if _FAILED in entry:
                    failed[int(shard)] = str(entry[_FAILED])
                else:
                    stats[int(shard)] = stats_from_json(entry)
            except (ValueError, TypeError, AttributeError) as exc:
                failed[int(shard)] = f"its statistics on the board are unreadable: {exc}"[:500]
        return stats, failed


# --- the sharded tasks' bodies ----------------------------------------------------------------


def dispatch_shards(
    app: Celery, context: ProberContext, spec: ProbeSpec, shards: int
) -> dict[str, object]:
    """Send one load_shard message per shard of *spec* (whose ``start_at`` they share)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    check_sharding(spec, shards)  # refused here, not by every shard after the lead
    check_target(context, spec.run_id)
    lead_s = max(0.0, (spec.start_at or time.time()) - time.time())
    with claim_run(context.redis, f"{spec.run_id}.dispatch", ttl_s=lease_ttl_s(lead_s)) as claim:
        if not claim.owned:
            return {"run_id": spec.run_id, "skipped": claim.state}
        body = spec.model_dump(mode="json")
        for shard in range(shards):
            app.send_task(
                LOAD_SHARD_TASK,
                kwargs={"spec": body, "shard": shard, "shards": shards},
                task_id=f"{spec.run_id}.shard{shard}",
            )
    _log.info("probe_run_sharded", run_id=spec.run_id, shards=shards)
    return {"run_id": spec.run_id, "shards": shards}


def run_one_shard(
    app: Celery, context: ProberContext, spec: ProbeSpec, shard: int, shards: int
) -> dict[str, object]:
    """Run shard *shard* of *shards*; post its statistics; the post completing the set merges.

    However the shard ends it posts to the board -- its statistics, or a failure marker when
    it raised -- so the run's set always completes and its merge is sent exactly once. A
    target that is not configured fails the shard before it claims or posts anything.
    """
    check_target(context, spec.run_id)
    settings = context.settings
    name = f"{spec.run_id}.shard{shard}"
    with claim_run(context.redis, name, ttl_s=lease_ttl_s(expected_s(spec))) as claim:
        if not claim.owned:
            return {"run_id": spec.run_id, "shard": shard, "skipped": claim.state}
        outcome: Mapping[int, RunStats] | str = "ended before posting its statistics"
        target: TargetInfo | None = None
        complete: bool | None = None
        try:
            with open_target(
                settings.target, context.common, context.twin, api=spec.api or settings.api
            ) as opened:
                target = opened.info()
                outcome = asyncio.run(_run_shard(context, spec, opened, shard, shards, claim))
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            _log.exception("probe_shard_failed", run_id=spec.run_id, shard=shard)
            raise
        finally:
            complete = _post_shard(context, spec, shard, shards, outcome, token=claim.token)
            if complete:
                _send_merge(app, context, spec, shards, target)
    return {"run_id": spec.run_id, "shard": shard, "complete": bool(complete)}


async def _run_shard(  # noqa: PLR0917 - private, one call site
    context: ProberContext,
    spec: ProbeSpec,
    target: Target,
    shard: int,
    shards: int,
    claim: RunClaim,
) -> dict[int, RunStats]:
    settings = context.settings
    run = run_shard(
        spec, target, settings.results_dir, settings=settings, shard=shard, shards=shards
    )
    return await while_held(claim, run)


def _post_shard(
    context: ProberContext,
    spec: ProbeSpec,
    shard: int,
    shards: int,
    outcome: Mapping[int, RunStats] | str,
    *,
    token: str,
) -> bool | None:
    """Post the shard's statistics or failure; True when it completed the set, None if lost."""
    board = ShardBoard(context.redis, spec.run_id)

    def post() -> bool:
        if isinstance(outcome, str):
            return board.post_failure(shard, outcome, shards, token=token)
        return board.post(shard, outcome, shards, token=token)

    complete = with_bus(context.bus_retry, post, what="shard_stats", run_id=spec.run_id)
    if complete is None:
        _log.error(
            "probe_shard_not_posted",
            run_id=spec.run_id,
            shard=shard,
            consequence="the run's merge will not run: no summary.json, no event",
        )
    else:
        _log.info(
            "probe_shard_posted",
            run_id=spec.run_id,
            shard=shard,
            failed=isinstance(outcome, str),
            completes_run=complete,
        )
    return complete


def _send_merge(
    app: Celery,
    context: ProberContext,
    spec: ProbeSpec,
    shards: int,
    target: TargetInfo | None,
) -> None:
    kwargs = {
        "spec": spec.model_dump(mode="json"),
        "shards": shards,
        "target": None if target is None else target.model_dump(mode="json"),
    }
    sent = with_bus(
        context.bus_retry,
        lambda: app.send_task(MERGE_TASK, kwargs=kwargs),
        what="merge_task",
        run_id=spec.run_id,
    )
    if sent is None:
        _log.error(
            "probe_run_merge_not_sent",
            run_id=spec.run_id,
            consequence="no summary.json, no event; the shards' stats are on the board and disk",
        )


def merge_and_publish(
    app: Celery,
    context: ProberContext,
    spec: ProbeSpec,
    shards: int,
    target: TargetInfo | None,
) -> dict[str, object]:
    """Merge every shard's RunStats exactly, write the one summary, publish the event.

    When shards failed the summary is marked interrupted, covers what the other shards (and
    the failed ones' partial stats-shard files) measured, names the failed and missing shards
    under ``shards``, and does not pass; the event is published all the same.
    """
    settings = context.settings
    folder = run_dir(settings.results_dir, spec.run_id)
    with claim_run(context.redis, spec.run_id, ttl_s=lease_ttl_s(0)) as claim:
        if not claim.owned:
            return {"run_id": spec.run_id, "skipped": claim.state}
        posted, failed = ShardBoard(context.redis, spec.run_id).read()
        parts = _shard_parts(posted, folder, shards)
        missing = sorted(set(range(shards)) - set(parts))
        info = None
        if failed or missing:
            # Missing: no statistics at all, so none of that shard's requests are counted.
            info = ShardInfo(
                count=shards, failed=dict(sorted(failed.items())), missing=tuple(missing)
            )
            merged = merge_stats([parts[i] for i in sorted(parts)])
            _log.error(
                "probe_run_shards_failed",
                run_id=spec.run_id,
                failed=sorted(failed),
                missing=missing,
                reasons=dict(failed),
            )
        else:
            merged = merge_shards(parts, shards)
        summary = write_summary(
            settings.results_dir,
            spec,
            merged,
            settings,
            target=target or _recorded_target(context, folder),
            shards=info,
        )
    published = publish_completed(app, summary, folder, retry=context.bus_retry)
    return task_outcome(summary, folder, published=published)


def _recorded_target(context: ProberContext, folder: Path) -> TargetInfo:
    """Where the run went when the shard that completed the set never opened its target."""
    if (folder / TARGET_FILE).exists():
        return read_target(folder)  # written by shard 0 when it started
    common = context.common
    if context.settings.target == "hosted" and common.runpod_endpoint_id:
        return TargetInfo(
            kind="hosted",
            endpoint_id=common.runpod_endpoint_id,
            base_url=common.runpod_endpoint_base_url,
        )
    # Every twin shard failed to start its twin: the run probed nothing, and says so.
    return TargetInfo(kind="twin", endpoint_id="not-started", base_url="not-started")


def _shard_parts(
    posted: dict[int, dict[int, RunStats]], folder: Path, shards: int
) -> dict[int, dict[int, RunStats]]:
    # A shard without statistics on the board -- Redis restarted without persistence after it
    # posted, or it failed and wrote its partial stats on the way out -- is read from the
    # stats-shard<i>.json it wrote next to its rows.
    for shard in set(range(shards)) - set(posted):
        path = folder / f"stats-shard{shard}.json"
        if not path.exists():
            continue
        try:
            posted[shard] = stats_from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # Left out, so the shard counts as missing and the run as interrupted.
            _log.error("probe_shard_stats_unreadable", path=str(path), error=str(exc)[:500])
    return posted
