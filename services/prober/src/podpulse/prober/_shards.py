"""One run split over several prober workers, and its shards' statistics merged exactly.

Shard ``i`` of ``k`` runs its share of the spec (``podpulse.prober._probe.shard_load``: its
slots of each level, requests ``i, i+k, ...``) and returns a ``RunStats`` per level;
merging them adds histogram buckets and counters, so the merged P95 is the P95 over every
request of the run, exactly as one process would have measured it. An average of the shards'
P95s is the P95 of no set of requests: one shard that met a slow worker moves the run's tail
by far more (or less) than its share of the average.

Collecting the shards needs no Celery result backend (the bus has none on purpose: events are
fire-and-forget, and a chord would make every shard's result a Redis key the backend owns).
Each shard writes its ``RunStats`` JSON into one Redis hash per run (:class:`ShardBoard`); the
shard that completes the set sends the merge task. No worker ever blocks waiting for others,
so k shards on k worker processes cannot deadlock behind a waiting coordinator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from ._probe import merge_stats
from ._summary import RunStats

__all__ = ["BOARD_TTL_S", "ShardBoard", "merge_shards", "stats_from_json", "stats_to_json"]

# The board outlives any plausible gap between the first and the last shard of a run.
BOARD_TTL_S = 2 * 24 * 3600
_BOARD_PREFIX = "podpulse:prober:shards:"


def merge_shards(parts: Mapping[int, Mapping[int, RunStats]], shards: int) -> dict[int, RunStats]:
    """The run's statistics per concurrency level from every shard's; exact, never averaged.

    *parts* maps shard index to that shard's ``{level: RunStats}``. Raises ValueError when a
    shard of ``0..shards-1`` is missing or an unknown one is present: a merge over part of
    a run would report its percentiles as the run's.
    """
    expected = set(range(shards))
    if shards < 1 or set(parts) != expected:
        missing = sorted(expected - set(parts))
        extra = sorted(set(parts) - expected)
        raise ValueError(f"shards of 0..{shards - 1}: missing {missing}, unexpected {extra}")
    return merge_stats([parts[index] for index in range(shards)])


def stats_to_json(stats: Mapping[int, RunStats]) -> dict[str, Any]:
    """One shard's ``{level: RunStats}`` as JSON (levels become string keys)."""
    return {str(level): each.to_json() for level, each in stats.items()}


def stats_from_json(data: Mapping[str, Any]) -> dict[int, RunStats]:
    """Read :func:`stats_to_json` output (or a shard's stats-shard<i>.json) back."""
    return {int(level): RunStats.from_json(each) for level, each in data.items()}


class ShardBoard:
    """Where a run's shards leave their statistics: one Redis hash, shard -> RunStats JSON."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.key = f"{_BOARD_PREFIX}{run_id}"

    def post(self, shard: int, stats: Mapping[int, RunStats], shards: int) -> bool:
        """Record *shard*'s statistics; True when this post completed the set of *shards*.

        Idempotent (HSETNX): a shard posted twice keeps its first statistics and does not
        complete the set a second time, so exactly one post triggers the merge.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(self.key, str(shard), json.dumps(stats_to_json(stats)))
        pipe.hlen(self.key)
        pipe.expire(self.key, BOARD_TTL_S)
        added, count, _ = pipe.execute()
        return bool(added) and int(count) == shards

    def collect(self) -> dict[int, dict[int, RunStats]]:
        """Every posted shard's ``{level: RunStats}``, by shard index."""
        raw: Mapping[bytes | str, bytes | str] = self.client.hgetall(self.key)
        return {int(shard): stats_from_json(json.loads(data)) for shard, data in raw.items()}
