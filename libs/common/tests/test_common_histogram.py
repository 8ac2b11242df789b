"""Histogram and percentile: nearest rank, exact merges, JSON, and no hash for a mutable value."""

from __future__ import annotations

import pytest

from podpulse.common.histogram import (
    BOUNDED_BUCKETS,
    BOUNDED_MAX,
    RELATIVE_ERROR,
    Histogram,
    percentile,
)


def test_percentile_is_nearest_rank() -> None:
    """P50 of 1..4 is 2 and P95 of 1..20 is 19: measured values, never interpolated."""
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 21)], 95) == 19.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        percentile([1.0], 0)


def test_merged_histograms_equal_one_over_all_values() -> None:
    """Adding counts gives the histogram (and percentiles) of every value, through JSON too."""
    a, b = Histogram().extend([1.0, 5.0, 9.0]), Histogram().extend([2.0, 100.0])
    whole = Histogram().extend([1.0, 5.0, 9.0, 2.0, 100.0])
    assert a.merge(b) == whole
    assert Histogram.from_json(whole.to_json()) == whole
    assert whole.percentile(50) == pytest.approx(5.0)
    assert whole.count == 5


def test_a_histogram_from_another_resolution_is_refused() -> None:
    """Buckets of another size cannot be added exactly: refused, naming both sizes."""
    with pytest.raises(ValueError, match=r"resolution 1.0 ms does not match 0.1 ms"):
        Histogram.from_json({"resolution_ms": 1.0, "counts": {}})


def test_histograms_are_not_hashable() -> None:
    """Equal by value and mutable, a histogram has no hash (a set or dict key would break)."""
    with pytest.raises(TypeError, match="unhashable"):
        hash(Histogram())


def test_a_bounded_histogram_is_within_one_percent_and_holds_few_buckets() -> None:
    """Log-sized buckets: every percentile within 1 % of a measured value (nearest rank), and
    a million spread values, huge ones and NaN fill at most BOUNDED_BUCKETS buckets."""
    values = [0.05 + i * 1.37 for i in range(5000)]
    bounded = Histogram.bounded().extend(values)
    for q in (1, 50, 95, 99, 100):
        exact = percentile(values, q)
        assert exact is not None
        got = bounded.percentile(q)
        assert got is not None
        assert abs(got - exact) <= max(RELATIVE_ERROR * exact, 0.1)
    wide = Histogram.bounded().extend(10 ** (i / 100_000 * 12 - 3) for i in range(1_000_000))
    wide.extend([float("nan"), float("inf"), -5.0, 1e300])
    assert len(wide.counts()) <= BOUNDED_BUCKETS
    assert BOUNDED_BUCKETS < 1000
    assert wide.max() == pytest.approx(BOUNDED_MAX, rel=RELATIVE_ERROR)
    assert wide.min() == 0.0


def test_bounded_histograms_merge_exactly_and_refuse_the_other_scheme() -> None:
    """Merging bounded shards adds counts (same as one over all values), survives JSON, and
    a bounded histogram never merges with, or equals, a 0.1 ms one."""
    a, b = Histogram.bounded().extend([1.0, 50.0]), Histogram.bounded().extend([7.0, 9000.0])
    whole = Histogram.bounded().extend([1.0, 50.0, 7.0, 9000.0])
    assert a.merge(b) == whole
    assert Histogram.from_json(whole.to_json()) == whole
    assert whole.to_json()["relative_error"] == RELATIVE_ERROR
    assert Histogram.bounded().extend([1.0]) != Histogram().extend([1.0])
    with pytest.raises(ValueError, match="bounded"):
        a.merge(Histogram())
    with pytest.raises(ValueError, match=r"relative error 0\.05"):
        Histogram.from_json({"relative_error": 0.05, "counts": {}})
