"""Hand-built RunSummary examples for podpulse.common's tests (the prober builds real ones)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.summary import (
    Breakdown,
    FailureKind,
    Latencies,
    LatencyStats,
    LevelSummary,
    RunSummary,
    Slo,
    SloRow,
    SloVerdict,
    TargetInfo,
    Tokens,
)

TARGET = TargetInfo(kind="hosted", endpoint_id="ep-canary", base_url="https://api.runpod.ai/v2")


def _stats(p50: float, count: int = 40) -> LatencyStats:
    return LatencyStats(p50=p50, p95=p50 * 1.5, p99=p50 * 1.8, mean=p50 * 1.1, count=count)


def level(concurrency: int = 1, *, total_p95: float = 3150.0, failed: int = 0) -> LevelSummary:
    """One level of 40 requests; its Total P95 line passes when under 8000 ms."""
    slo = Slo()
    margin = slo.total_p95_ms - total_p95
    status: Literal["PASS", "FAIL"] = "PASS" if margin >= 0 else "FAIL"
    ok = 40 - failed
    success = 100.0 * ok / 40
    rows = (
        SloRow(metric="Total P95", slo="≤ 8000 ms", threshold=slo.total_p95_ms, unit="ms",
               actual=total_p95, margin=margin, margin_pct=round(100 * margin / 8000, 2),
               status=status),
        SloRow(metric="Success rate", slo="≥ 99 %", threshold=99.0, unit="%", actual=success,
               margin=success - 99.0, margin_pct=round(success - 99.0, 2),
               status="PASS" if success >= 99 else "FAIL"),
    )  # fmt: skip
    return LevelSummary(
        concurrency=concurrency,
        requests=40,
        ok=ok,
        failed=failed,
        success_rate_pct=success,
        failures={"FAILED": FailureKind(count=failed, examples=("boom",))} if failed else {},
        rate_limited_responses=0,
        percentile_method="nearest-rank",
        latency_ms=Latencies(
            total=_stats(2100.0).model_copy(update={"p95": total_p95}),
            exec=_stats(1900.0),
            delay=_stats(150.0),
            overhead=_stats(50.0),
            schedule_lag=_stats(0.1),
        ),
        breakdown_pct=Breakdown(execution=86.0, queue=11.0, overhead=3.0),
        tokens=Tokens(input=400, output=4000, tokens_per_second=52.6, throughput_tokens_per_s=40.0),
        throughput_rps=0.4,
        started_at=datetime(2026, 1, 1, 3, tzinfo=UTC),
        ended_at=datetime(2026, 1, 1, 3, 1, 40, tzinfo=UTC),
        duration_s=100.0,
        slo=SloVerdict(passed=all(r.status == "PASS" for r in rows), thresholds=slo, rows=rows),
    )


def load_summary(run_id: str = "run-1", *, total_p95: float = 3150.0) -> RunSummary:
    """A complete load run's summary, passing unless *total_p95* breaks the SLO."""
    one = level(total_p95=total_p95)
    return RunSummary(
        schema_version=1,
        run_id=run_id,
        kind="load",
        target=TARGET,
        interrupted=False,
        passed=one.slo.passed,
        spec=ProbeSpec(run_id=run_id, kind="load", runs=40),
        levels=(one,),
    )
