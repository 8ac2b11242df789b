"""Latency statistics podpulse services share: one percentile method, histograms that merge.

Percentiles use the **nearest-rank** method: P(q) of n values is the value at rank
ceil(q/100 · n) in ascending order (P50 of [1, 2, 3, 4] is 2). It always returns a measured
value, never an interpolation, so a reported P95 is a latency some request really had.

A ``Histogram`` counts values in fixed buckets of ``RESOLUTION_MS`` (0.1 ms). Buckets are the
same in every process, so merging the histograms of shards is adding counts: the merged
percentiles equal those of one histogram over all values (never an average of percentiles).
Values are rounded to the bucket, i.e. exact to 0.1 ms.

``Histogram.bounded()`` is the same histogram with log-sized buckets (DDSketch's scheme): a
percentile is within ``RELATIVE_ERROR`` (1 %) of a measured value, and however many values
are counted it holds at most ``BOUNDED_BUCKETS`` buckets (values are clamped to
[0, ``BOUNDED_MAX``]). A long-running process keeping histograms per series (the alerter)
uses it so memory stays bounded; the prober's results keep the exact 0.1 ms buckets.
Histograms merge only with histograms of the same scheme.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "BOUNDED_BUCKETS",
    "BOUNDED_MAX",
    "RELATIVE_ERROR",
    "RESOLUTION_MS",
    "Histogram",
    "percentile",
]

RESOLUTION_MS = 0.1

RELATIVE_ERROR = 0.01
# Bucket i >= 1 holds (BOUNDED_MIN * GAMMA**(i-1), BOUNDED_MIN * GAMMA**i]; bucket 0 holds
# [0, BOUNDED_MIN]. Reporting 2 * BOUNDED_MIN * GAMMA**i / (GAMMA + 1) for bucket i is off by
# at most RELATIVE_ERROR from any value in it.
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
BOUNDED_MIN = 0.1
# 1e7 ms is 2.8 hours; as tokens/s it is far beyond any model. Larger values count as this.
BOUNDED_MAX = 1e7
BOUNDED_BUCKETS = math.ceil(math.log(BOUNDED_MAX / BOUNDED_MIN) / _LOG_GAMMA) + 1


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when there are none)."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def _bounded_bucket(value: float) -> int:
    if not value > BOUNDED_MIN:  # NaN too: a value nobody can rank counts as the lowest
        return 0
    if value >= BOUNDED_MAX:
        return BOUNDED_BUCKETS - 1
    return min(math.ceil(math.log(value / BOUNDED_MIN) / _LOG_GAMMA), BOUNDED_BUCKETS - 1)


def _bounded_value(bucket: int) -> float:
    if bucket <= 0:
        return 0.0
    return BOUNDED_MIN * 2 * _GAMMA**bucket / (_GAMMA + 1)


class Histogram:
    """Counts of values in 0.1 ms buckets (or log-sized ones, ``bounded()``); mergeable
    exactly, serialisable to JSON."""

    __slots__ = ("_bounded", "_counts")

    def __init__(self, counts: Mapping[int, int] | None = None, *, bounded: bool = False) -> None:
        self._counts: Counter[int] = Counter(counts or {})
        self._bounded = bounded

    @classmethod
    def bounded(cls, counts: Mapping[int, int] | None = None) -> Histogram:
        """A histogram of at most ``BOUNDED_BUCKETS`` buckets, exact to ``RELATIVE_ERROR``."""
        return cls(counts, bounded=True)

    @property
    def is_bounded(self) -> bool:
        """True for log-sized buckets (``bounded()``), False for 0.1 ms ones."""
        return self._bounded

    def bucket_of(self, value: float) -> int:
        """The bucket a value is counted in (negative values are clamped to 0)."""
        if self._bounded:
            return _bounded_bucket(value)
        return max(0, round(value / RESOLUTION_MS))

    def value_of(self, bucket: int) -> float:
        """The value a bucket stands for in percentiles and means."""
        return _bounded_value(bucket) if self._bounded else bucket * RESOLUTION_MS

    def add(self, value_ms: float) -> None:
        """Count one value (negative values are clamped to 0)."""
        self._counts[self.bucket_of(value_ms)] += 1

    def add_bucket(self, bucket: int, count: int = 1) -> None:
        """Count *count* values in one bucket, as ``counts()`` reported it."""
        self._counts[bucket] += count

    def counts(self) -> dict[int, int]:
        """A copy of the non-zero bucket counts."""
        return {b: n for b, n in self._counts.items() if n}

    def extend(self, values_ms: Iterable[float]) -> Histogram:
        """Count several values; returns self."""
        for value in values_ms:
            self.add(value)
        return self

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both sets of counts (of the same bucket scheme)."""
        if other._bounded != self._bounded:
            raise ValueError("cannot merge a bounded histogram with a 0.1 ms one")
        return Histogram(self._counts + other._counts, bounded=self._bounded)

    @property
    def count(self) -> int:
        """How many values were counted."""
        return sum(self._counts.values())

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile over the bucketed values."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        total = self.count
        if total == 0:
            return None
        rank = max(math.ceil(q / 100 * total), 1)
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return self.value_of(bucket)
        raise AssertionError("unreachable: rank <= total")  # pragma: no cover

    def mean(self) -> float | None:
        """Mean of the bucketed values."""
        total = self.count
        if total == 0:
            return None
        if not self._bounded:  # integer sum: exact, whatever order shards merged in
            return sum(b * n for b, n in self._counts.items()) * RESOLUTION_MS / total
        # fsum is exactly rounded, so here too the order of merging cannot change the mean.
        return math.fsum(self.value_of(b) * n for b, n in self._counts.items()) / total

    def min(self) -> float | None:
        """The lowest bucketed value (None when empty)."""
        buckets = [b for b, n in self._counts.items() if n > 0]
        return self.value_of(min(buckets)) if buckets else None

    def max(self) -> float | None:
        """The highest bucketed value (None when empty)."""
        buckets = [b for b, n in self._counts.items() if n > 0]
        return self.value_of(max(buckets)) if buckets else None

    def to_json(self) -> dict[str, Any]:
        """``{"resolution_ms": 0.1, "counts": {"bucket": n}}`` (JSON keys are strings);
        a bounded histogram says ``"relative_error": 0.01`` instead of its resolution."""
        counts = {str(b): n for b, n in sorted(self._counts.items())}
        if self._bounded:
            return {"relative_error": RELATIVE_ERROR, "counts": counts}
        return {"resolution_ms": RESOLUTION_MS, "counts": counts}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        """Read ``to_json`` output back; a different resolution is refused."""
        bounded = "relative_error" in data
        if bounded and data.get("relative_error") != RELATIVE_ERROR:
            raise ValueError(
                f"histogram relative error {data.get('relative_error')!r} does not match "
                f"{RELATIVE_ERROR}; shards must come from the same podpulse version"
            )
        if not bounded and data.get("resolution_ms") != RESOLUTION_MS:
            raise ValueError(
                f"histogram resolution {data.get('resolution_ms')!r} ms does not match "
                f"{RESOLUTION_MS} ms; shards must come from the same podpulse version"
            )
        counts = data.get("counts")
        if not isinstance(counts, Mapping):
            raise TypeError("histogram 'counts' must be an object of bucket -> count")
        return cls({int(b): int(n) for b, n in counts.items()}, bounded=bounded)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Histogram)
            and self._bounded == other._bounded
            and +self._counts == +other._counts
        )

    # Mutable and equal by value: a hash would change as values are added, so there is none.
    __hash__ = None  # type: ignore[assignment]  # typeshed types object.__hash__ as a method
