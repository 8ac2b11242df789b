"""What ingest hands the evaluator: observations of one job, per series, and queries.

Ingest (OTLP in, windows) and the evaluator (rules, state, notifications) meet here
only: ingest turns each ``runpod.job`` span (or a worker's GenAI span) into one
``Observation`` and adds it to a ``WindowStore``; the evaluator asks the store for one
statistic of one metric over one window. Neither knows how the other works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "METRICS",
    "STATS",
    "Metric",
    "Observation",
    "SeriesKey",
    "Stat",
    "StatValue",
    "WindowStore",
]

Metric = Literal[
    "exec_ms", "delay_ms", "total_ms", "fail_rate", "tokens_per_s", "ttft_ms", "tpot_ms"
]
Stat = Literal["p50", "p95", "p99", "mean", "min", "max", "rate"]
METRICS: tuple[Metric, ...] = (
    "exec_ms",
    "delay_ms",
    "total_ms",
    "fail_rate",
    "tokens_per_s",
    "ttft_ms",
    "tpot_ms",
)
STATS: tuple[Stat, ...] = ("p50", "p95", "p99", "mean", "min", "max", "rate")


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One alerting series: an endpoint (``runpod.endpoint.id``) and, when known, its model."""

    endpoint: str
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One finished job as a span reported it; what the span did not carry is None.

    ``at`` is the span's end time (Unix seconds): observations fall into windows by when the
    job ended, whichever process received them. ``failed`` None: not a job (a worker's GenAI
    span, one generation), so it counts in no fail_rate; a failed job's latencies and tokens/s
    are not counted either (as in the prober's SLO, latency statistics are of successful jobs).
    ``ttft_ms`` and ``tpot_ms`` (time to first token, time per output token) come only from
    spans that carry them: streamed requests' prober spans and the worker's GenAI spans.
    """

    series: SeriesKey
    at: float
    failed: bool | None
    exec_ms: float | None = None
    delay_ms: float | None = None
    total_ms: float | None = None
    tokens_per_s: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None


@dataclass(frozen=True, slots=True)
class StatValue:
    """A statistic over a window and how many samples it rests on (value None: no samples).

    For ``fail_rate`` the samples are jobs and the value the failed fraction (0-1; ``rate``
    and ``mean`` give it, the percentiles do not apply); for the latency and tokens/s metrics
    the samples are jobs that reported the metric, and ``rate`` is samples per second.
    """

    value: float | None
    samples: int


class WindowStore(Protocol):
    """Windows of observations per series; every ingesting process behind one address sees
    one store."""

    def add(self, observation: Observation) -> None:
        """Count one observation in its series' current bucket."""

    def series(self, now: float) -> list[SeriesKey]:
        """The series with any observation in the longest window kept, at ``now``."""

    def stat(
        self, key: SeriesKey, metric: Metric, stat: Stat, window_s: float, now: float
    ) -> StatValue:
        """One statistic of one metric over the ``window_s`` seconds up to ``now``."""
