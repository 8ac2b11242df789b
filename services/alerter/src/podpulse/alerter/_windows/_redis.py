"""Windows merged through Redis, so several processes taking spans give one verdict.

Each process keeps its own buckets in a ``MemoryWindowStore`` and, every flush interval,
writes the buckets that changed into one Redis hash per (series, bucket start):
``<prefix>b:<series>:<index>``, fields ``<writer>.<generation>:<field>`` holding that
writer's (that process's) whole count so far for that generation of the series (``HSET``,
not ``HINCRBY``; a series evicted and fed again is a new generation, whose counts add). A
write is therefore idempotent: a flush retried after a lost reply, or repeated, never counts
a span twice. Each hash expires ``retention_s`` after its bucket ends. ``stat()`` reads the
hashes of the window's buckets and adds every writer's fields, so any process (one taking
spans, the evaluator, a Celery worker) sees the same merged window; a span shows there at
most one flush interval after it arrived. A sorted set ``<prefix>series`` (score: the last
bucket's end) lists the series.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable

import redis

from ._contract import Metric, Observation, SeriesKey, Stat, StatValue
from ._memory import Bucket, MemoryWindowStore, bucket_indexes, series_order, stat_of

__all__ = ["RedisWindowStore"]


def _series_id(key: SeriesKey) -> str:
    # ASCII JSON: any endpoint or model string gives a distinct, printable key part.
    return json.dumps([key.endpoint, key.model], separators=(",", ":"))


def _series_key(series_id: str) -> SeriesKey | None:
    try:
        endpoint, model = json.loads(series_id)
    except (ValueError, TypeError):
        return None
    if not isinstance(endpoint, str) or not (model is None or isinstance(model, str)):
        return None
    return SeriesKey(endpoint, model)


class RedisWindowStore:
    """A ``WindowStore`` whose windows are the sum of every writer's buckets in Redis.

    *writer_id* names this process's fields in the bucket hashes (a new random one by default).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        bucket_s: float,
        retention_s: float,
        max_series: int,
        clock: Callable[[], float],
        on_evict: Callable[[SeriesKey], None] | None = None,
        writer_id: str | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.max_series = max_series
        self._clock = clock
        self.writer_id = writer_id or uuid.uuid4().hex[:12]
        self.local = MemoryWindowStore(
            bucket_s=bucket_s,
            retention_s=retention_s,
            max_series=max_series,
            clock=clock,
            on_evict=on_evict,
            flushed=True,
        )

    def _bucket_key(self, key: SeriesKey, index: int) -> str:
        return f"{self._prefix}b:{_series_id(key)}:{index}"

    def add(self, observation: Observation) -> None:
        """Count one observation locally; the next ``flush()`` writes it to Redis."""
        self.local.add(observation)

    def flush(self) -> int:
        """Write every bucket changed since the last flush; returns how many were written.

        On a Redis error the buckets stay marked and the error is raised: the next flush
        writes them again (whole counts, so nothing is lost or doubled).
        """
        dirty = self.local.take_dirty()
        if not dirty:
            return 0
        index_key = f"{self._prefix}series"
        latest: dict[str, float] = {}
        now = self._clock()
        pipe = self._client.pipeline(transaction=False)
        for key, index, generation, fields in dirty:
            end = (index + 1) * self.bucket_s
            name = self._bucket_key(key, index)
            if fields:
                writer = f"{self.writer_id}.{generation}"
                pipe.hset(name, mapping={f"{writer}:{f}": n for f, n in fields.items()})
                # Kept until the longest window no longer reaches it (relative, so Redis'
                # clock and ours need not agree).
                pipe.expire(name, max(1, math.ceil(end + self.retention_s - now)))
            sid = _series_id(key)
            latest[sid] = max(latest.get(sid, 0.0), end)
        pipe.zadd(index_key, latest, gt=True)
        # Series idle past the retention leave the index; past the cap, the idlest go too.
        pipe.zremrangebyscore(index_key, "-inf", now - self.retention_s)
        pipe.zremrangebyrank(index_key, 0, -(self.max_series + 1))
        try:
            pipe.execute()
        except redis.RedisError:
            self.local.give_back(dirty)
            raise
        return len(dirty)

    def series(self, now: float) -> list[SeriesKey]:
        """Every writer's series with a bucket inside the retention at *now*."""
        ids = self._client.zrangebyscore(f"{self._prefix}series", now - self.retention_s, "+inf")
        keys = {_series_key(i.decode() if isinstance(i, bytes) else str(i)) for i in ids}
        return sorted((k for k in keys if k is not None), key=series_order)

    def merged(self, key: SeriesKey, window_s: float, now: float) -> Bucket:
        """Every writer's flushed buckets of one series overlapping the window, merged."""
        pipe = self._client.pipeline(transaction=False)
        for index in bucket_indexes(self.bucket_s, window_s, now):
            pipe.hgetall(self._bucket_key(key, index))
        merged = Bucket()
        for fields in pipe.execute():
            counts: dict[str, int] = {}
            for name, value in fields.items():
                text = name.decode() if isinstance(name, bytes) else str(name)
                field = text.rpartition(":")[2]
                counts[field] = counts.get(field, 0) + int(value)
            merged.add_fields(counts)
        return merged

    def stat(
        self, key: SeriesKey, metric: Metric, stat: Stat, window_s: float, now: float
    ) -> StatValue:
        """One statistic over every writer's flushed buckets overlapping the window."""
        return stat_of(self.merged(key, window_s, now), metric, stat, window_s)
