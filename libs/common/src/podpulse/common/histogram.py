"""Latency statistics podpulse services share: one percentile method, histograms that merge.

Percentiles use the **nearest-rank** method: P(q) of n values is the value at rank
ceil(q/100 · n) in ascending order (P50 of [1, 2, 3, 4] is 2). It always returns a measured
value, never an interpolation, so a reported P95 is a latency some request really had.

A ``Histogram`` counts values in fixed buckets of ``RESOLUTION_MS`` (0.1 ms). Buckets are the
same in every process, so merging the histograms of shards is adding counts: the merged
percentiles equal those of one histogram over all values (never an average of percentiles).
Values are rounded to the bucket, i.e. exact to 0.1 ms.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RESOLUTION_MS", "Histogram", "percentile"]

RESOLUTION_MS = 0.1


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when there are none)."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


class Histogram:
    """Counts of values in 0.1 ms buckets; mergeable exactly, serialisable to JSON."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self._counts: Counter[int] = Counter(counts or {})

    def add(self, value_ms: float) -> None:
        """Count one value (negative values are clamped to 0)."""
        self._counts[max(0, round(value_ms / RESOLUTION_MS))] += 1

    def extend(self, values_ms: Iterable[float]) -> Histogram:
        """Count several values; returns self."""
        for value in values_ms:
            self.add(value)
        return self

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both sets of counts."""
        return Histogram(self._counts + other._counts)

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
                return bucket * RESOLUTION_MS
        raise AssertionError("unreachable: rank <= total")  # pragma: no cover

    def mean(self) -> float | None:
        """Mean of the bucketed values."""
        total = self.count
        if total == 0:
            return None
        return sum(b * n for b, n in self._counts.items()) * RESOLUTION_MS / total

    def to_json(self) -> dict[str, Any]:
        """``{"resolution_ms": 0.1, "counts": {"bucket": n}}`` (JSON keys are strings)."""
        return {
            "resolution_ms": RESOLUTION_MS,
            "counts": {str(b): n for b, n in sorted(self._counts.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        """Read ``to_json`` output back; a different resolution is refused."""
        if data.get("resolution_ms") != RESOLUTION_MS:
            raise ValueError(
                f"histogram resolution {data.get('resolution_ms')!r} ms does not match "
                f"{RESOLUTION_MS} ms; shards must come from the same podpulse version"
            )
        counts = data.get("counts")
        if not isinstance(counts, Mapping):
            raise TypeError("histogram 'counts' must be an object of bucket -> count")
        return cls({int(b): int(n) for b, n in counts.items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and +self._counts == +other._counts

    # Mutable and equal by value: a hash would change as values are added, so there is none.
    __hash__ = None  # type: ignore[assignment]
