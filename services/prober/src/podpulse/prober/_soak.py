"""Soak verdicts: per-window statistics and a trend test for slow degradation.

A soak passes when all hold: zero failures; total P95 under the soak threshold
in every window; and no degradation of per-window P95 or throughput over the run.

Trend test. An ordinary least-squares line is fitted to the per-window values against the
window's mid-time (minutes). The slope's 95% confidence interval is slope ± t(0.975, n-2)·SE,
SE = sqrt(SSR/(n-2) / Σ(x-x̄)²). Degradation means both:

* significant: the whole interval is above 0 (P95) or below 0 (throughput), and
* relevant: the fitted change over the soak, |slope|·span, is at least ``min_change_pct``
  of the mean window value, so a statistically clear drift of a few ms on a 2 s P95 does
  not fail a soak, while a 10 % rise does.

Windows covering less than half their length (the run's tail) are left out of the fit: a
half-empty window's throughput would read as a collapse.

A window's request rate is over its real length: the part of it the run lasted, which is
less than ``window_s`` only for the last window (marked ``partial``). A run of a set duration
ends at ``origin + duration``; the requests still in flight then finish a moment later,
and belong to the last window they were sent in. Counted in a window of their own, the
last two of a soak at concurrency 2 made a "window" of 0.13 s and a rate of 15.9 req/s.

At least 3 windows are needed for an interval (n-2 ≥ 1 degree of freedom); with fewer the
soak fails as unproven.
"""

from __future__ import annotations

import math

from podpulse.common.output import plain
from podpulse.common.summary import (
    LevelSummary,
    SoakCheck,
    SoakTrends,
    SoakVerdict,
    SoakWindow,
    Trend,
)

from ._run_stats import RunStats

__all__ = ["fit_trend", "soak_report", "soak_verdict", "t_975", "window_rows"]

_MIN_WINDOWS = 3
_MIN_COVERAGE = 0.5

# Student's t 0.975 quantiles for 1..30 degrees of freedom (standard tables, 3 decimals).
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z_975 = 1.959963984540054


def t_975(df: int) -> float:
    """Student's t 0.975 quantile (two-sided 95%) for ``df`` degrees of freedom.

    A table up to 30, then the Cornish-Fisher expansion around the normal quantile, which is
    within 1e-4 of the exact value there; no scipy needed at run time.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z, v = _Z_975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def fit_trend(xs: list[float], ys: list[float]) -> Trend | None:
    """OLS fit of ``ys`` on ``xs`` with a t-based 95% CI; None with fewer than 3 points."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs and ys differ in length")
    if n < _MIN_WINDOWS:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    ssr = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(ssr / (n - 2) / sxx)
    half = t_975(n - 2) * se
    return Trend(
        n=n,
        slope=slope,
        ci_low=slope - half,
        ci_high=slope + half,
        intercept=intercept,
        mean=mean_y,
        span_min=max(xs) - min(xs),
    )


def _scheduled_windows(stats: RunStats, duration_s: float | None) -> dict[int, RunStats]:
    """The windows, with those past a set duration's end folded into the last one in it."""
    assert stats.window_s is not None
    if duration_s is None:
        return dict(stats.windows)
    last = max(0, math.ceil(duration_s / stats.window_s) - 1)
    windows: dict[int, RunStats] = {}
    for index, window in sorted(stats.windows.items()):
        into = min(index, last)
        windows[into] = windows[into].merge(window) if into in windows else window
    return windows


def window_rows(stats: RunStats, *, duration_s: float | None = None) -> tuple[SoakWindow, ...]:
    """One row per window: span, requests, failures, P50/P95 of total, throughput.

    ``duration_s``: the run's set length, when it had one; the run ends there (or at its last
    result, if that came first) and later results count in the last window.
    """
    if stats.window_s is None or stats.origin is None:
        raise ValueError("these RunStats were collected without windows")
    width, origin = stats.window_s, stats.origin
    end = stats.last_done if stats.last_done is not None else origin
    if duration_s is not None:
        end = min(end, origin + duration_s)
    windows = _scheduled_windows(stats, duration_s)
    last = max(windows, default=-1)
    rows = []
    for index in range(last + 1):
        window = windows.get(index, RunStats())
        start = origin + index * width
        covered = max(0.0, min(width, end - start))
        total = window.hist["total"]
        rows.append(
            SoakWindow(
                index=index,
                start_s=round(index * width, 3),
                covered_s=round(covered, 3),
                requests=window.requests,
                failures=window.requests - window.ok,
                p50_ms=round(total.percentile(50) or 0, 1) if total.count else None,
                p95_ms=round(total.percentile(95) or 0, 1) if total.count else None,
                throughput_rps=round(window.ok / covered, 4) if covered else None,
                tokens_per_s=round(window.output_tokens / covered, 2) if covered else None,
                full=covered >= _MIN_COVERAGE * width,
                partial=covered < width,
            )
        )
    return tuple(rows)


def _degraded(trend: Trend | None, *, rising_is_bad: bool, min_change_pct: float) -> bool:
    if trend is None:
        return False
    if rising_is_bad:
        return trend.ci_low > 0 and trend.change_pct >= min_change_pct
    return trend.ci_high < 0 and -trend.change_pct >= min_change_pct


def soak_verdict(
    stats: RunStats,
    *,
    p95_threshold_ms: float,
    min_change_pct: float,
    duration_s: float | None = None,
) -> SoakVerdict:
    """The soak's checks, each with its evidence, and the overall verdict."""
    rows = window_rows(stats, duration_s=duration_s)
    fit = [r for r in rows if r.full and r.p95_ms is not None]
    assert stats.window_s is not None
    xs = [(r.start_s + r.covered_s / 2) / 60 for r in fit]
    p95_trend = fit_trend(xs, [r.p95_ms for r in fit if r.p95_ms is not None])
    rps_trend = fit_trend(xs, [r.throughput_rps or 0.0 for r in fit])
    failures = stats.requests - stats.ok
    over = [r.index for r in rows if r.p95_ms is not None and r.p95_ms >= p95_threshold_ms]
    checks = (
        SoakCheck(
            check="zero failures",
            passed=failures == 0 and stats.requests > 0,
            detail=f"{failures} failed of {stats.requests}",
        ),
        SoakCheck(
            check=f"P95 < {p95_threshold_ms:g} ms in every window",
            passed=not over and bool(fit),
            detail=f"windows over: {over}" if over else f"max window P95 {_max_p95(rows)} ms",
        ),
        SoakCheck(
            check="enough windows for a trend test",
            passed=len(fit) >= _MIN_WINDOWS,
            detail=f"{len(fit)} full windows (need {_MIN_WINDOWS})",
        ),
        SoakCheck(
            check="no P95 degradation",
            passed=not _degraded(p95_trend, rising_is_bad=True, min_change_pct=min_change_pct),
            detail=_describe(p95_trend, "ms/min"),
        ),
        SoakCheck(
            check="no throughput degradation",
            passed=not _degraded(rps_trend, rising_is_bad=False, min_change_pct=min_change_pct),
            detail=_describe(rps_trend, "req/s per min"),
        ),
    )
    return SoakVerdict(
        passed=all(check.passed for check in checks),
        checks=checks,
        p95_threshold_ms=p95_threshold_ms,
        min_change_pct=min_change_pct,
        window_s=stats.window_s,
        trend=SoakTrends(p95_ms_per_min=p95_trend, throughput_rps_per_min=rps_trend),
        windows=rows,
    )


def _max_p95(rows: tuple[SoakWindow, ...]) -> float | None:
    values = [r.p95_ms for r in rows if r.p95_ms is not None]
    return max(values) if values else None


def _describe(trend: Trend | None, unit: str) -> str:
    if trend is None:
        return "not enough windows"
    return (
        f"slope {plain(trend.slope, sign=True)} {unit}, 95% CI "
        f"[{plain(trend.ci_low, sign=True)}, {plain(trend.ci_high, sign=True)}], "
        f"fitted change {trend.change_pct:+.1f}% over {trend.span_min:.1f} min"
    )


def soak_report(run_id: str, level: LevelSummary, soak: SoakVerdict) -> str:
    """A short markdown report of a soak: verdict, checks, windows, plot."""
    total = level.latency_ms.total
    lines = [
        f"# Soak {run_id}: {'PASS' if soak.passed else 'FAIL'}",
        "",
        f"{level.requests} requests at concurrency {level.concurrency} "
        f"over {level.duration_s / 60:.1f} min; total P50 {total.p50} ms, "
        f"P95 {total.p95} ms, success {level.success_rate_pct}%.",
        "",
        "| check | result | evidence |",
        "|---|---|---|",
        *(f"| {c.check} | {'PASS' if c.passed else 'FAIL'} | {c.detail} |" for c in soak.checks),
        "",
        f"Degradation rule: the slope's 95% CI excludes 0 and the fitted change over the soak "
        f"is at least {soak.min_change_pct:g}% of the mean window value.",
        "",
        "| window | start (s) | length (s) | requests | failures | P50 (ms) | P95 (ms) | req/s |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {w.index}{' (partial)' if w.partial else ''} | {w.start_s:g} | {w.covered_s:g} | "
            f"{w.requests} | {w.failures} | {w.p50_ms} | {w.p95_ms} | {w.throughput_rps} |"
            for w in soak.windows
        ),
    ]
    if soak.plot:
        lines += ["", f"![latency over time]({soak.plot})"]
    return "\n".join(lines) + "\n"
