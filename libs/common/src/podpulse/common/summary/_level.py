"""One concurrency level: where it ran, its latencies, failures, tokens and SLO verdict."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    Field,
    model_validator,
)

from ._base import Count, FailureName, Ms, Pct, Status, TargetKind, Verdict, _Model

# --- where it ran ------------------------------------------------------------------------------


class TargetInfo(_Model):
    """The endpoint a run probed. Never its key."""

    kind: TargetKind = Field(description="hosted: a RunPod endpoint; twin: a local twin.")
    endpoint_id: str = Field(min_length=1)
    base_url: str = Field(min_length=1, description="The job API's base, e.g. .../v2.")


# --- one concurrency level --------------------------------------------------------------------


class LatencyStats(_Model):
    """Nearest-rank percentiles and the mean of one metric, in ms (None: no values)."""

    p50: Ms | None
    p90: Ms | None = None  # absent from summaries written before it was reported
    p95: Ms | None
    p99: Ms | None
    mean: Ms | None
    count: Count


class Latencies(_Model):
    """Every latency metric of a level, over its successful requests."""

    total: LatencyStats = Field(description="Intended start to final result, client-side.")
    exec: LatencyStats = Field(description="RunPod executionTime.")
    delay: LatencyStats = Field(description="RunPod delayTime: time in the queue.")
    overhead: LatencyStats = Field(description="total - delay - exec: network and polling.")
    schedule_lag: LatencyStats = Field(description="How late requests left (every request).")
    # Streamed runs only (None in whole-answer runs and in summaries from before streaming).
    ttft: LatencyStats | None = Field(
        default=None, description="Intended start to the first text-carrying chunk."
    )
    itl: LatencyStats | None = Field(
        default=None, description="Gaps between successive text-carrying chunks (all gaps)."
    )
    tpot: LatencyStats | None = Field(
        default=None, description="(last text chunk - first) / (output tokens - 1)."
    )


class Goodput(_Model):
    """vLLM's goodput: completed requests per second that met every per-request target."""

    good: Count = Field(description="Completed requests that met every target.")
    rps: float | None = Field(description="good over the level's wall-clock duration.")
    total_ms: float = Field(gt=0, description="Target on each request's total.")
    ttft_ms: float | None = Field(description="Target on each TTFT (streamed runs).")
    tpot_ms: float | None = Field(description="Target on each TPOT (streamed runs).")


class FailureKind(_Model):
    """How many requests failed one way, and up to three distinct reasons."""

    count: Annotated[int, Field(ge=1)]
    examples: tuple[str, ...] = Field(max_length=3)


Failures = dict[FailureName, FailureKind]


class Breakdown(_Model):
    """The mean total split into execution, queue and overhead, in percent."""

    execution: float | None
    queue: float | None
    overhead: float | None


class Tokens(_Model):
    """Token counts of the successful requests and the two throughputs."""

    input: Count
    output: Count
    tokens_per_second: float | None = Field(
        description="Output tokens over execution seconds (decode speed, the alert's tokens/s)."
    )
    throughput_tokens_per_s: float | None = Field(
        description="Output tokens over the run's wall-clock duration."
    )


class Slo(_Model):
    """The thresholds a load test passes when all hold, on successful requests."""

    exec_p50_ms: float = Field(default=3000, gt=0)
    exec_p95_ms: float = Field(default=5000, gt=0)
    total_p50_ms: float = Field(default=5000, gt=0)
    total_p95_ms: float = Field(default=8000, gt=0)
    success_pct: float = Field(default=99.0, ge=0, le=100)
    # What a chat user feels: lines of streamed runs only (STREAM.md section 4's defaults).
    ttft_p95_ms: float = Field(default=2000, gt=0)
    itl_p95_ms: float = Field(default=100, gt=0)
    tpot_p95_ms: float = Field(default=50, gt=0)


SloMetric = Literal[
    "Exec P50",
    "Exec P95",
    "Total P50",
    "Total P95",
    "Success rate",
    "TTFT P95",
    "ITL P95",
    "TPOT P95",
]
# The rounding of a row's actual (1 decimal for ms, 3 for %) and of its margin, computed from
# the unrounded value: a margin may differ from threshold - actual by up to both roundings.
_MARGIN_SLACK = {"ms": 0.1 + 1e-6, "%": 0.001 + 1e-9}


class SloRow(_Model):
    """One SLO line: its threshold, the measured value, the headroom and the status.

    The margin must be the headroom of ``actual`` against ``threshold`` (up to rounding), and
    the status must follow the margin: a row cannot claim a headroom its numbers lack.
    """

    metric: SloMetric
    slo: str = Field(description="The line as shown, e.g. '≤ 5000 ms'.")
    threshold: float
    unit: Literal["ms", "%"]
    actual: float | None
    margin: float | None = Field(description="Headroom: threshold - actual (>= 0 passes).")
    margin_pct: float | None = Field(description="The margin as a share of the threshold.")
    status: Status

    @model_validator(mode="after")
    def _status_matches_margin(self) -> Self:
        expected_unit = "%" if self.metric == "Success rate" else "ms"
        if self.unit != expected_unit:
            raise ValueError(f"{self.metric} is measured in {expected_unit}, not {self.unit}")
        if (self.actual is None) != (self.margin is None):
            raise ValueError("margin and actual are both set or both None")
        if self.actual is not None and self.margin is not None:
            # Latencies must stay under their threshold; the success rate must reach its own.
            headroom = (
                self.actual - self.threshold if self.unit == "%" else self.threshold - self.actual
            )
            if abs(headroom - self.margin) > _MARGIN_SLACK[self.unit]:
                raise ValueError(
                    f"margin {self.margin} is not the headroom of actual {self.actual} "
                    f"against threshold {self.threshold}"
                )
        # A margin is rounded for display: a FAIL by 0.04 ms reads as a margin of -0.0.
        if self.status == "PASS":
            consistent = self.margin is not None and self.margin >= 0
        else:
            consistent = self.margin is None or self.margin <= 0
        if not consistent:
            raise ValueError(f"status {self.status} contradicts margin {self.margin}")
        return self


_THRESHOLD_OF: dict[str, str] = {
    "Exec P50": "exec_p50_ms",
    "Exec P95": "exec_p95_ms",
    "Total P50": "total_p50_ms",
    "Total P95": "total_p95_ms",
    "Success rate": "success_pct",
    "TTFT P95": "ttft_p95_ms",
    "ITL P95": "itl_p95_ms",
    "TPOT P95": "tpot_p95_ms",
}


class SloVerdict(_Model):
    """The SLO table of a level and whether every line passed."""

    passed: Verdict
    thresholds: Slo
    rows: tuple[SloRow, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _passed_matches_rows(self) -> Self:
        metrics = [row.metric for row in self.rows]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"an SLO line appears twice: {metrics}")
        for row in self.rows:
            if row.threshold != getattr(self.thresholds, _THRESHOLD_OF[row.metric]):
                raise ValueError(f"{row.metric}: threshold {row.threshold} is not the SLO's")
        if self.passed != all(row.status == "PASS" for row in self.rows):
            raise ValueError(f"passed={self.passed} contradicts the status of its rows")
        return self


class LevelSummary(_Model):
    """Everything measured at one concurrency level."""

    concurrency: Count
    requests: Count = Field(description="Measured requests (warm-up excluded).")
    ok: Count
    failed: Count
    success_rate_pct: Pct | None
    failures: Failures = Field(description="Failed requests by kind, with example reasons.")
    rate_limited_responses: Count = Field(description="429 answers backed off from.")
    percentile_method: str
    latency_ms: Latencies
    breakdown_pct: Breakdown
    tokens: Tokens
    throughput_rps: float | None
    goodput: Goodput | None = Field(
        default=None, description="None only in summaries written before goodput existed."
    )
    started_at: AwareDatetime | None = Field(description="The first request's intended start.")
    ended_at: AwareDatetime | None = Field(description="The last request's result.")
    duration_s: Annotated[float, Field(ge=0)]
    slo: SloVerdict

    @model_validator(mode="after")
    def _counts_add_up(self) -> Self:
        if self.goodput is not None and self.goodput.good > self.ok:
            raise ValueError(f"goodput counts {self.goodput.good} good of {self.ok} completed")
        if self.ok + self.failed != self.requests:
            raise ValueError(f"ok {self.ok} + failed {self.failed} != requests {self.requests}")
        counted = sum(kind.count for kind in self.failures.values())
        if counted != self.failed:
            raise ValueError(f"failures by kind add up to {counted}, not failed={self.failed}")
        if self.requests == 0:
            consistent = self.success_rate_pct is None
        else:
            rate = 100.0 * self.ok / self.requests
            consistent = (
                self.success_rate_pct is not None
                and abs(self.success_rate_pct - rate) <= _MARGIN_SLACK["%"]
            )
        if not consistent:
            raise ValueError(
                f"success_rate_pct {self.success_rate_pct} is not ok/requests "
                f"({self.ok}/{self.requests})"
            )
        return self

    @model_validator(mode="after")
    def _slo_measures_these_requests(self) -> Self:
        # The SLO rows' actuals are this level's own figures, so a verdict cannot be kept
        # while the numbers under it are edited (or the other way round).
        latency = self.latency_ms
        measured = {
            "Exec P50": latency.exec.p50,
            "Exec P95": latency.exec.p95,
            "Total P50": latency.total.p50,
            "Total P95": latency.total.p95,
            "Success rate": self.success_rate_pct,
            "TTFT P95": latency.ttft.p95 if latency.ttft else None,
            "ITL P95": latency.itl.p95 if latency.itl else None,
            "TPOT P95": latency.tpot.p95 if latency.tpot else None,
        }
        for row in self.slo.rows:
            if row.actual != measured[row.metric]:
                raise ValueError(
                    f"SLO line {row.metric} reports {row.actual}, the level measured "
                    f"{measured[row.metric]}"
                )
        return self
