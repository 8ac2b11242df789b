"""Histogram and percentile: nearest rank, exact merges, JSON, and no hash for a mutable value."""

from __future__ import annotations

import pytest

from podpulse.common.histogram import Histogram, percentile


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
