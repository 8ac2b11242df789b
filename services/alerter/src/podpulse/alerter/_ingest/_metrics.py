"""What ``GET /metrics`` shows: the alerter's own counters and the windowed statistics.

``REGISTRY`` is the alerter's one process-wide registry: the ingest counters are here. The
evaluator's and the outbox's counters are in a registry the serving process makes for them
(``_serve``), rendered on the same page. The windowed statistics are not stored metrics: a
``WindowCollector`` computes them from the window store at scrape time, over
``ALERTER_METRICS_WINDOW_S``, and each ingest app renders its own next to ``REGISTRY``.

Statistics per series (labels ``endpoint``, ``model``; ``model`` is "" when spans carry none):
``podpulse_exec_ms``, ``podpulse_delay_ms``, ``podpulse_total_ms``, ``podpulse_tokens_per_s``,
``podpulse_ttft_ms`` and ``podpulse_tpot_ms`` with ``quantile`` 0.5/0.95/0.99 (nearest rank,
within 1 %), ``podpulse_window_samples{metric}``, ``podpulse_window_jobs`` and
``podpulse_fail_rate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._windows._contract import Metric as WindowMetric
from .._windows._contract import SeriesKey
from .._windows._memory import Bucket

__all__ = [
    "FLUSH_ERRORS",
    "OTLP_REQUESTS",
    "REGISTRY",
    "SERIES_EVICTED",
    "SPANS_ACCEPTED",
    "SPANS_DROPPED",
    "SPANS_IGNORED",
    "SPANS_RECEIVED",
    "WindowCollector",
    "render",
]

REGISTRY = CollectorRegistry()

SPANS_RECEIVED = Counter(
    "podpulse_alerter_spans_received", "Spans in OTLP requests that decoded.", registry=REGISTRY
)
SPANS_ACCEPTED = Counter(
    "podpulse_alerter_spans_accepted", "Spans counted in a window.", registry=REGISTRY
)
SPANS_IGNORED = Counter(
    "podpulse_alerter_spans_ignored",
    "Spans that are not runpod.job or GenAI spans the alerter reads (accepted, unused).",
    registry=REGISTRY,
)
SPANS_DROPPED = Counter(
    "podpulse_alerter_spans_dropped",
    "Spans rejected (reported in partial_success), by reason.",
    ["reason"],
    registry=REGISTRY,
)
OTLP_REQUESTS = Counter(
    "podpulse_alerter_otlp_requests",
    "OTLP/HTTP export requests, by HTTP status code of the reply.",
    ["code"],
    registry=REGISTRY,
)
SERIES_EVICTED = Counter(
    "podpulse_alerter_series_evicted",
    "Series dropped from this process's windows because ALERTER_MAX_SERIES was reached.",
    registry=REGISTRY,
)
FLUSH_ERRORS = Counter(
    "podpulse_alerter_window_flush_errors",
    "Failed writes of window buckets to Redis (retried at the next flush).",
    registry=REGISTRY,
)

log = structlog.get_logger("podpulse.alerter")

_QUANTILES = (("0.5", 50.0), ("0.95", 95.0), ("0.99", 99.0))
_LATENCIES: tuple[tuple[WindowMetric, str, str], ...] = (
    ("exec_ms", "podpulse_exec_ms", "RunPod executionTime of successful jobs, ms."),
    ("delay_ms", "podpulse_delay_ms", "RunPod delayTime of successful jobs, ms."),
    ("total_ms", "podpulse_total_ms", "Client-measured total of successful jobs, ms."),
    ("tokens_per_s", "podpulse_tokens_per_s", "Output tokens per second."),
    ("ttft_ms", "podpulse_ttft_ms", "Time to first token of streamed jobs and generations, ms."),
    ("tpot_ms", "podpulse_tpot_ms", "Time per output token after the first, ms."),
)


class _Windows(Protocol):
    def series(self, now: float) -> list[SeriesKey]: ...

    def merged(self, key: SeriesKey, window_s: float, now: float) -> Bucket: ...


class WindowCollector(Collector):
    """Gauges of every series' window statistics, computed from the store when scraped."""

    def __init__(self, store: _Windows, *, window_s: float, clock: Callable[[], float]) -> None:
        self._store = store
        self._window_s = window_s
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """One family per statistic; a series with no samples of a metric has no quantiles."""
        now = self._clock()
        window = f" Over the last {self._window_s:g} s."
        labels = ["endpoint", "model"]
        latency = {
            metric: GaugeMetricFamily(name, doc + window, labels=[*labels, "quantile"])
            for metric, name, doc in _LATENCIES
        }
        samples = GaugeMetricFamily(
            "podpulse_window_samples",
            "Samples of each metric." + window,
            labels=[*labels, "metric"],
        )
        jobs = GaugeMetricFamily("podpulse_window_jobs", "Jobs ended." + window, labels=labels)
        fail_rate = GaugeMetricFamily(
            "podpulse_fail_rate", "Failed share of jobs (0-1)." + window, labels=labels
        )
        for key in self._store.series(now):
            bucket = self._store.merged(key, self._window_s, now)
            values = [key.endpoint, key.model or ""]
            for metric, _, _ in _LATENCIES:
                hist = bucket.hist[metric]
                samples.add_metric([*values, metric], hist.count)
                if hist.count:
                    for label, q in _QUANTILES:
                        latency[metric].add_metric([*values, label], hist.percentile(q) or 0.0)
            jobs.add_metric(values, bucket.jobs)
            if bucket.jobs:
                fail_rate.add_metric(values, bucket.failed / bucket.jobs)
        yield from latency.values()
        yield samples
        yield jobs
        yield fail_rate


def render(registries: Iterable[CollectorRegistry]) -> bytes:
    """The text exposition of ``REGISTRY`` followed by one app's *registries* (the window
    statistics, the alerts); one whose Redis read fails is left out and logged."""
    parts = [generate_latest(REGISTRY)]
    for registry in registries:
        try:
            parts.append(generate_latest(registry))
        except redis.RedisError as exc:
            log.warning("metrics.collector_failed", error=f"{type(exc).__name__}: {exc}")
    return b"".join(parts)
