"""A soak: its windows, trend tests and verdict."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import (
    Field,
    model_validator,
)

from ._base import Count, Verdict, _Model

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
    full: Verdict = Field(description="Covered at least half its length: used in the trend fit.")
    partial: Verdict = Field(
        default=False,
        description="The run ended inside it: its rate is over covered_s, not window_s.",
    )


class SoakCheck(_Model):
    """One check of the soak verdict, with its evidence."""

    check: str
    passed: Verdict
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

    passed: Verdict
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
        for window in self.windows:
            # covered_s is rounded to the millisecond.
            if window.covered_s > self.window_s + 0.001:
                raise ValueError(
                    f"window {window.index} covers {window.covered_s} s of {self.window_s} s"
                )
            if window.failures > window.requests:
                raise ValueError(f"window {window.index} has more failures than requests")
        return self
