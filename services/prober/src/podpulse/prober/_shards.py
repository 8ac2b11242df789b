"""One run split over several prober workers, and its shards' statistics merged exactly.

Shard ``i`` of ``k`` runs its share of the spec (``podpulse.prober._probe.shard_load``: its
slots of each level, requests ``i, i+k, ...``) and returns a ``RunStats`` per level;
merging them adds histogram buckets and counters, so the merged P95 is the P95 over every
request of the run, exactly as one process would have measured it. An average of the shards'
P95s is the P95 of no set of requests: one shard that met a slow worker moves the run's tail
by far more (or less) than its share of the average.

Collecting the shards needs no Celery result backend (the bus has none on purpose: events are
fire-and-forget, and a chord would make every shard's result a Redis key the backend owns).
Each shard writes its ``RunStats`` JSON into one Redis hash per run (:class:`ShardBoard`), or a
failure marker when it raised, so every shard that ran counts towards the set; the post that
completes the set, and only that one, sends the merge task. No worker ever blocks waiting for
others, so k shards on k worker processes cannot deadlock behind a waiting coordinator.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from ._probe import merge_stats
from ._summary import RunStats

__all__ = ["BOARD_TTL_S", "ShardBoard", "merge_shards", "stats_from_json", "stats_to_json"]

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
            entry = json.loads(data)
            if _FAILED in entry:
                failed[int(shard)] = str(entry[_FAILED])
            else:
                stats[int(shard)] = stats_from_json(entry)
        return stats, failed
