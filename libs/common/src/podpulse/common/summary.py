"""A probe run's result, typed: what summary.json holds and what ``ProbeRunCompleted`` carries.

The prober writes a :class:`RunSummary` and every reader -- its own ``report`` command, the
alerter, the tagger -- reads one back through :func:`read_summary`, so a summary.json that does
not match this schema is refused with the field that is wrong, never half-read. Verdicts are
checked against their evidence when a summary is built or read: a ``passed`` that its own SLO
rows, soak checks or sweep recommendation contradict does not validate, so no reader can show
a verdict the numbers do not back.

Latency percentiles are nearest-rank over successful requests (see
``podpulse.common.histogram``); failures are counted by kind and judged by the success rate.
``schema_version`` changes when a field changes meaning or goes away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .probe_spec import Arrival, ProbeKind, ProbeSpec, check_run_id

__all__ = [
    "SCHEMA_VERSION",
    "Arrival",
    "Breakdown",
    "FailureKind",
    "FailureName",
    "Failures",
    "Latencies",
    "LatencyStats",
    "LevelSummary",
    "ProbeKind",
    "ProbeSpec",
    "Recommendation",
    "RunSummary",
    "ShardInfo",
    "Slo",
    "SloRow",
    "SloVerdict",
    "SoakCheck",
    "SoakTrends",
    "SoakVerdict",
    "SoakWindow",
    "SummaryError",
    "SweepResult",
    "SweepRow",
    "TargetInfo",
    "TargetKind",
    "Tightest",
    "Tokens",
    "Trend",
    "check_run_id",
    "parse_summary",
    "read_summary",
]

SCHEMA_VERSION: Literal[1] = 1

TargetKind = Literal["hosted", "twin"]
Status = Literal["PASS", "FAIL"]
# Every way a request can fail (the prober's Outcome values other than OK).
FailureName = Literal[
    "FAILED", "TIMED_OUT", "CANCELLED", "HTTP_ERROR", "RATE_LIMITED", "CLIENT_TIMEOUT"
]
Ms = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Pct = Annotated[float, Field(ge=0, le=100)]


class _Model(BaseModel):
    # frozen: a summary is a record of what happened; extra="forbid": a misspelt or stale
    # field is an error naming it, not silently dropped.
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class SloRow(_Model):
    """One SLO line: its threshold, the measured value, the headroom and the status."""

    metric: Literal["Exec P50", "Exec P95", "Total P50", "Total P95", "Success rate"]
    slo: str = Field(description="The line as shown, e.g. '≤ 5000 ms'.")
    threshold: float
    unit: Literal["ms", "%"]
    actual: float | None
    margin: float | None = Field(description="Headroom: threshold - actual (>= 0 passes).")
    margin_pct: float | None = Field(description="The margin as a share of the threshold.")
    status: Status

    @model_validator(mode="after")
    def _status_matches_margin(self) -> Self:
        # A margin is rounded for display: a FAIL by 0.04 ms reads as a margin of -0.0.
        if self.status == "PASS":
            consistent = self.margin is not None and self.margin >= 0
        else:
            consistent = self.margin is None or self.margin <= 0
        if not consistent:
            raise ValueError(f"status {self.status} contradicts margin {self.margin}")
        return self


class SloVerdict(_Model):
    """The SLO table of a level and whether every line passed."""

    passed: bool
    thresholds: Slo
    rows: tuple[SloRow, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _passed_matches_rows(self) -> Self:
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
    started_at: AwareDatetime | None = Field(description="The first request's intended start.")
    ended_at: AwareDatetime | None = Field(description="The last request's result.")
    duration_s: Annotated[float, Field(ge=0)]
    slo: SloVerdict

    @model_validator(mode="after")
    def _counts_add_up(self) -> Self:
        if self.ok + self.failed != self.requests:
            raise ValueError(f"ok {self.ok} + failed {self.failed} != requests {self.requests}")
        counted = sum(kind.count for kind in self.failures.values())
        if counted != self.failed:
            raise ValueError(f"failures by kind add up to {counted}, not failed={self.failed}")
        return self


# --- sweeps -----------------------------------------------------------------------------------


class Tightest(_Model):
    """The SLO line with the least headroom at a level."""

    metric: str
    margin: float | None
    margin_pct: float | None
    unit: Literal["ms", "%"]


class SweepRow(_Model):
    """One level of a sweep's table."""

    concurrency: Count
    total_p50_ms: float | None
    total_p95_ms: float | None
    exec_p50_ms: float | None
    queue_p50_ms: float | None
    success_rate_pct: float | None
    status: Status
    tightest: Tightest


class Recommendation(_Model):
    """The highest level that passes with every lower one passing, and how close it came."""

    concurrency: Count
    tightest: Tightest
    failed_levels: tuple[int, ...]


class SweepResult(_Model):
    """A sweep's table and recommendation (None: the lowest level already failed)."""

    table: tuple[SweepRow, ...] = Field(min_length=1)
    recommendation: Recommendation | None


# --- soaks ------------------------------------------------------------------------------------


class SoakWindow(_Model):
    """One window of a soak."""

    index: Count
    start_s: float = Field(description="Seconds from the soak's start.")
    covered_s: float = Field(ge=0, description="How much of the window the run lasted.")
    requests: Count
    failures: Count
    p50_ms: float | None
    p95_ms: float | None
    throughput_rps: float | None
    tokens_per_s: float | None
    full: bool = Field(description="Covered at least half its length: used in the trend fit.")


class SoakCheck(_Model):
    """One check of the soak verdict, with its evidence."""

    check: str
    passed: bool
    detail: str


class Trend(_Model):
    """An OLS slope per minute with its 95% confidence interval."""

    n: Annotated[int, Field(ge=3)]
    slope: float
    ci_low: float
    ci_high: float
    intercept: float
    mean: float
    span_min: float

    @property
    def change_pct(self) -> float:
        """Fitted change over the span as a share of the mean value, in percent."""
        return 100 * self.slope * self.span_min / self.mean if self.mean else 0.0


class SoakTrends(_Model):
    """The trend fits of window P95 and window throughput (None: too few windows)."""

    p95_ms_per_min: Trend | None
    throughput_rps_per_min: Trend | None


class SoakVerdict(_Model):
    """A soak's checks, trends and windows, and whether every check passed."""

    passed: bool
    checks: tuple[SoakCheck, ...] = Field(min_length=1)
    p95_threshold_ms: float
    min_change_pct: float
    window_s: float = Field(gt=0)
    trend: SoakTrends
    windows: tuple[SoakWindow, ...]
    plot: str | None = Field(default=None, description="The plot's file name in the folder.")

    @model_validator(mode="after")
    def _passed_matches_checks(self) -> Self:
        if self.passed != all(check.passed for check in self.checks):
            raise ValueError(f"passed={self.passed} contradicts the result of its checks")
        return self


# --- sharded runs -----------------------------------------------------------------------------


class ShardInfo(_Model):
    """Which shards of a sharded run failed or never reported (set only when some did)."""

    count: Annotated[int, Field(ge=2)]
    failed: dict[int, str] = Field(description="Shard index -> why it failed.")
    missing: tuple[int, ...] = Field(description="Shards whose statistics are not included.")


# --- the run ----------------------------------------------------------------------------------


class RunSummary(_Model):
    """A run's summary: its levels, and a sweep's table or a soak's verdict, and the verdict.

    ``passed`` is what the CLI's exit code and the completion event report: the SLO held, a
    sweep found a level to recommend (it is there to find where the SLO breaks), or the soak
    passed. An interrupted run never passes: its evidence is incomplete.
    """

    # Required, so a summary.json from before the schema says so first.
    schema_version: Literal[1]
    run_id: str
    kind: ProbeKind
    target: TargetInfo
    interrupted: bool = Field(description="Cancelled, or shards failed: the evidence is partial.")
    passed: bool
    spec: ProbeSpec
    levels: tuple[LevelSummary, ...] = Field(
        min_length=1, description="One per concurrency level, in ascending order."
    )
    sweep: SweepResult | None = None
    soak: SoakVerdict | None = None
    shards: ShardInfo | None = None

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        return check_run_id(value)

    @model_validator(mode="after")
    def _verdict_matches_evidence(self) -> Self:
        if self.spec.run_id != self.run_id or self.spec.kind != self.kind:
            raise ValueError("spec names another run or kind than the summary")
        concurrencies = [level.concurrency for level in self.levels]
        if concurrencies != sorted(set(concurrencies)):
            raise ValueError(f"levels must be distinct and ascending, got {concurrencies}")
        if (self.kind == "sweep") != (self.sweep is not None):
            raise ValueError("a sweep, and only a sweep, has a sweep result")
        if (self.kind == "soak") != (self.soak is not None):
            raise ValueError("a soak, and only a soak, has a soak verdict")
        if self.kind != "sweep" and len(self.levels) != 1:
            raise ValueError(f"a {self.kind} has one level, got {len(self.levels)}")
        if self.shards is not None and not self.interrupted:
            raise ValueError("a run with failed or missing shards is interrupted")
        if self.passed != (not self.interrupted and self._evidence_passes()):
            raise ValueError(f"passed={self.passed} contradicts the run's own evidence")
        return self

    def _evidence_passes(self) -> bool:
        if self.sweep is not None:
            return self.sweep.recommendation is not None
        if self.soak is not None:
            return self.soak.passed
        return self.levels[0].slo.passed

    @property
    def level(self) -> LevelSummary:
        """The headline level: the only one, or a sweep's recommended (else highest) level."""
        if self.sweep is not None and self.sweep.recommendation is not None:
            wanted = self.sweep.recommendation.concurrency
            return next(level for level in self.levels if level.concurrency == wanted)
        return self.levels[-1]

    def at(self, concurrency: int) -> LevelSummary:
        """The summary of one level; KeyError when the run had no such level."""
        for level in self.levels:
            if level.concurrency == concurrency:
                return level
        raise KeyError(f"run {self.run_id} has no concurrency level {concurrency}")


# --- reading ----------------------------------------------------------------------------------


class SummaryError(ValueError):
    """A summary that does not validate; the message names the file and each bad field."""


def parse_summary(text: str | bytes, *, source: str = "summary") -> RunSummary:
    """Validate summary JSON into a RunSummary; SummaryError naming each bad field."""
    try:
        return RunSummary.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<summary>'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise SummaryError(f"{source} is not a valid RunSummary: {problems}") from None


def read_summary(path: Path) -> RunSummary:
    """Read and validate a summary.json; SummaryError (a ValueError) naming the bad field.

    An unreadable file raises OSError as usual.
    """
    return parse_summary(path.read_bytes(), source=str(path))
