"""Windows per series in memory: a ring of short buckets of bounded histograms and counts.

A bucket holds what ended in ``[start, start + bucket_s)``: bounded histograms
(``podpulse.common.histogram``, 1 % relative error, at most ~930 buckets each) of exec, delay
and total ms, tokens/s, and time to first token and per output token (ms), and the number of
jobs and of failed jobs. A window of ``w``
seconds up to ``now`` is the merge of the buckets that overlap ``(now - w, now]``, so it is
exact to one bucket. Buckets older than ``retention_s`` are dropped as new ones start, and at
most ``max_series`` series are kept (the least recently fed one is evicted and counted), so
memory is bounded per series and in the number of series however many spans arrive.

Each time a series is (re-)created it gets a new *generation*: the Redis store writes each
generation's counts under its own fields, so a series evicted and fed again adds to what its
earlier generation flushed instead of overwriting it, and the changes an evicted series had
not flushed yet are still handed to the next flush.

Percentiles are the nearest-rank ones of the shared histogram, so a window's P95 here and a
prober's P95 over the same jobs agree to the histogram's 1 %.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from podpulse.common.histogram import Histogram

from ._contract import Metric, Observation, SeriesKey, Stat, StatValue

__all__ = [
    "Bucket",
    "DirtyBucket",
    "MemoryWindowStore",
    "bucket_indexes",
    "series_order",
    "stat_of",
]

_LATENCY_FIELDS: tuple[tuple[Metric, str], ...] = (
    ("exec_ms", "e"),
    ("delay_ms", "d"),
    ("total_ms", "t"),
    ("tokens_per_s", "k"),
    # Fields of a Redis bucket hash are "<prefix><histogram bucket>": one letter per metric,
    # none of them "j" or "f" (the counts). An older alerter reading these skips them.
    ("ttft_ms", "r"),
    ("tpot_ms", "p"),
)
_PREFIX_METRIC = {prefix: metric for metric, prefix in _LATENCY_FIELDS}
_PERCENTILES: dict[Stat, float] = {"p50": 50, "p95": 95, "p99": 99}


@dataclass(slots=True)
class Bucket:
    """What ended in one bucket of one series; merging buckets adds their counts."""

    hist: dict[Metric, Histogram] = field(
        default_factory=lambda: {m: Histogram.bounded() for m, _ in _LATENCY_FIELDS}
    )
    jobs: int = 0
    failed: int = 0

    def add(self, obs: Observation) -> None:
        """Count one observation: a job in the failure counts, a success's values in the
        histograms, a GenAI observation (failed None) only in its values."""
        if obs.failed is not None:
            self.jobs += 1
            if obs.failed:
                self.failed += 1
                return
        # Each metric is the Observation field of the same name.
        for metric, _ in _LATENCY_FIELDS:
            value = getattr(obs, metric)
            if value is not None:
                self.hist[metric].add(value)

    def merge_into(self, other: Bucket) -> None:
        """Add this bucket's counts to *other*."""
        other.jobs += self.jobs
        other.failed += self.failed
        for metric, hist in self.hist.items():
            target = other.hist[metric]
            for bucket, count in hist.counts().items():
                target.add_bucket(bucket, count)

    def fields(self) -> dict[str, int]:
        """Flat counts (``j`` jobs, ``f`` failed, ``e<bucket>`` exec ...) for a Redis hash."""
        out: dict[str, int] = {}
        if self.jobs:
            out["j"] = self.jobs
        if self.failed:
            out["f"] = self.failed
        for metric, prefix in _LATENCY_FIELDS:
            for bucket, count in self.hist[metric].counts().items():
                out[f"{prefix}{bucket}"] = count
        return out

    def add_fields(self, fields: Mapping[str, int]) -> None:
        """Add counts in the ``fields()`` form (several processes' fields add up)."""
        for name, count in fields.items():
            if name == "j":
                self.jobs += count
            elif name == "f":
                self.failed += count
            else:
                metric = _PREFIX_METRIC.get(name[:1])
                if metric is not None and name[1:].isdigit():
                    self.hist[metric].add_bucket(int(name[1:]), count)


class DirtyBucket(NamedTuple):
    """A bucket changed since the last flush: its series, index, the series' generation and
    its whole counts (``Bucket.fields()``)."""

    key: SeriesKey
    bucket_index: int
    generation: int
    fields: dict[str, int]


def series_order(key: SeriesKey) -> tuple[str, str]:
    """A sort key for series (a series without a model sorts as model "")."""
    return (key.endpoint, key.model or "")


def stat_of(bucket: Bucket, metric: Metric, stat: Stat, window_s: float) -> StatValue:
    """One statistic of a (merged) bucket; see ``StatValue`` for what each one means."""
    if metric == "fail_rate":
        if stat in ("rate", "mean") and bucket.jobs:
            return StatValue(bucket.failed / bucket.jobs, bucket.jobs)
        # The percentiles, min and max of a 0/1 outcome say nothing a rule should use.
        return StatValue(None, bucket.jobs)
    hist = bucket.hist[metric]
    samples = hist.count
    if stat == "rate":
        return StatValue(samples / window_s, samples)
    value: float | None
    if stat in _PERCENTILES:
        value = hist.percentile(_PERCENTILES[stat]) if samples else None
    elif stat == "mean":
        value = hist.mean()
    else:
        value = hist.min() if stat == "min" else hist.max()
    return StatValue(value, samples)


def bucket_indexes(bucket_s: float, window_s: float, now: float) -> range:
    """Indexes (start // bucket_s) of the buckets overlapping ``(now - window_s, now]``."""
    first = math.floor((now - window_s) / bucket_s)
    # A bucket whose end is exactly now - window_s lies outside the window.
    if (first + 1) * bucket_s <= now - window_s:
        first += 1
    return range(first, math.floor(now / bucket_s) + 1)


class MemoryWindowStore:
    """A ``WindowStore`` in this process: the whole truth for one ingesting process, and each
    one's own part of the Redis-merged store (*flushed*: ``take_dirty()`` is called, and the
    unflushed changes of an evicted series are kept for it). Thread-safe (one lock)."""

    def __init__(
        self,
        *,
        bucket_s: float,
        retention_s: float,
        max_series: int,
        clock: Callable[[], float],
        on_evict: Callable[[SeriesKey], None] | None = None,
        flushed: bool = False,
    ) -> None:
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.max_series = max_series
        self._clock = clock
        self._on_evict = on_evict
        self._series: OrderedDict[SeriesKey, dict[int, Bucket]] = OrderedDict()
        self._generation: dict[SeriesKey, int] = {}
        self._generations = itertools.count()
        self._dirty: set[tuple[SeriesKey, int]] = set()
        # Changed buckets of series evicted before they were flushed, for the next flush;
        # kept only when something flushes (*flushed*), or they would pile up unread.
        self._flushed = flushed
        self._orphans: list[DirtyBucket] = []
        self._lock = threading.Lock()

    def add(self, observation: Observation) -> None:
        """Count one observation in its series' bucket (the one its end time falls in)."""
        index = math.floor(observation.at / self.bucket_s)
        key = observation.series
        evicted: SeriesKey | None = None
        with self._lock:
            buckets = self._series.get(key)
            if buckets is None:
                if len(self._series) >= self.max_series:
                    evicted = self._evict_idlest()
                buckets = self._series[key] = {}
                self._generation[key] = next(self._generations)
            else:
                self._series.move_to_end(key)
            bucket = buckets.get(index)
            if bucket is None:
                self._prune(buckets)
                bucket = buckets[index] = Bucket()
            bucket.add(observation)
            self._dirty.add((key, index))
        if evicted is not None and self._on_evict is not None:
            self._on_evict(evicted)

    def _evict_idlest(self) -> SeriesKey:
        key, buckets = self._series.popitem(last=False)
        generation = self._generation.pop(key)
        for index, bucket in buckets.items():
            if (key, index) in self._dirty:
                self._dirty.discard((key, index))
                if self._flushed:
                    self._orphans.append(DirtyBucket(key, index, generation, bucket.fields()))
        return key

    def _prune(self, buckets: dict[int, Bucket]) -> None:
        oldest = math.floor((self._clock() - self.retention_s) / self.bucket_s)
        for index in [i for i in buckets if i < oldest]:
            del buckets[index]

    def series(self, now: float) -> list[SeriesKey]:
        """Series with a bucket inside the retention at *now*, sorted."""
        oldest = math.floor((now - self.retention_s) / self.bucket_s)
        with self._lock:
            keys = [k for k, b in self._series.items() if any(i >= oldest for i in b)]
        return sorted(keys, key=series_order)

    def merged(self, key: SeriesKey, window_s: float, now: float) -> Bucket:
        """The buckets of one series overlapping ``(now - window_s, now]``, merged."""
        merged = Bucket()
        with self._lock:
            buckets = self._series.get(key, {})
            for index in bucket_indexes(self.bucket_s, window_s, now):
                bucket = buckets.get(index)
                if bucket is not None:
                    bucket.merge_into(merged)
        return merged

    def stat(
        self, key: SeriesKey, metric: Metric, stat: Stat, window_s: float, now: float
    ) -> StatValue:
        """One statistic of one metric over the buckets overlapping the window."""
        return stat_of(self.merged(key, window_s, now), metric, stat, window_s)

    def __len__(self) -> int:
        return len(self._series)

    def take_dirty(self) -> list[DirtyBucket]:
        """The buckets changed since the last call, as whole-bucket fields, and forget them
        (those of series evicted since included)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            out, self._orphans = self._orphans, []
            for key, index in dirty:
                bucket = self._series.get(key, {}).get(index)
                if bucket is not None:  # pruned since: its last flush stands
                    out.append(DirtyBucket(key, index, self._generation[key], bucket.fields()))
            return out

    def give_back(self, items: Iterable[DirtyBucket]) -> None:
        """Hand these out again at the next ``take_dirty()`` (their write failed)."""
        with self._lock:
            for item in items:
                if self._generation.get(item.key) == item.generation:
                    self._dirty.add((item.key, item.bucket_index))
                else:  # evicted meanwhile: its counts as taken are the ones to write
                    self._orphans.append(item)

    def mark_dirty(self, items: Iterable[tuple[SeriesKey, int]]) -> None:
        """Flush these buckets again next time."""
        with self._lock:
            self._dirty.update(items)

    def buckets(self) -> Iterator[tuple[SeriesKey, int]]:
        """Every (series, bucket index) held, for tests and memory checks."""
        with self._lock:
            items = [(k, i) for k, b in self._series.items() for i in b]
        return iter(items)
