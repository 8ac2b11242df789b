"""Statistics without a twin: percentiles, RunStats merging, SLO rows, sweeps, soak trends."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.summary import Breakdown, FailureKind, LevelSummary, Slo
from podpulse.prober import RunStats
from podpulse.prober._soak import fit_trend, soak_verdict, t_975
from podpulse.prober._sweep import recommend, sweep_rows


def rec(
    total_ms: float,
    *,
    seq: int = 0,
    outcome: Outcome = Outcome.OK,
    delay: float | None = 10,
    execution: float | None = None,
    start: float = 1000.0,
    error: str | None = None,
    tokens: int | None = 40,
) -> RequestRecord:
    """A record whose total is ``total_ms``; execution defaults to total - delay - 5."""
    if execution is None and delay is not None:
        execution = total_ms - delay - 5
    return RequestRecord(
        run_id="t",
        seq=seq,
        concurrency=1,
        intended=start,
        sent=start,
        done=start + total_ms / 1000,
        outcome=outcome,
        delay_ms=delay if outcome is Outcome.OK else None,
        exec_ms=execution if outcome is Outcome.OK else None,
        input_tokens=10,
        output_tokens=tokens,
        error=error,
    )


def test_percentiles_match_hand_computed_nearest_rank():
    """P50/P95/P99 of 1..20 ms are ranks 10, 19 and 20 (nearest rank)."""
    stats = RunStats.from_records(rec(float(v)) for v in range(20, 0, -1))
    latency = stats.latency("total")
    assert (latency.p50, latency.p95, latency.p99) == (10.0, 19.0, 20.0)
    assert latency.mean == 10.5


def test_failures_are_counted_by_kind_and_left_out_of_latency():
    """Failures count per kind with example reasons; latency percentiles cover successes."""
    records = [rec(100.0, seq=i) for i in range(8)] + [
        rec(9000.0, outcome=Outcome.CLIENT_TIMEOUT, error="client timeout"),
        rec(50.0, outcome=Outcome.FAILED, error="worker twin-1 exited with code 17"),
    ]
    summary = RunStats.from_records(records).to_summary(Slo(), 1)
    assert summary.requests == 10
    assert summary.ok == 8
    assert summary.success_rate_pct == 80.0
    assert summary.failures["FAILED"] == FailureKind(
        count=1, examples=("worker twin-1 exited with code 17",)
    )
    assert summary.failures["CLIENT_TIMEOUT"].count == 1
    assert summary.latency_ms.total.p99 == 100.0


def test_slo_rows_carry_margins_and_status():
    """Each SLO line has threshold, actual, margin (threshold - actual) and a status."""
    stats = RunStats.from_records(rec(float(t), seq=t) for t in range(4000, 6000, 20))
    rows = {row.metric: row for row in stats.slo_rows(Slo())}
    assert rows["Total P50"].actual == 4980.0
    assert rows["Total P50"].margin == 20.0
    assert rows["Total P50"].status == "PASS"
    # rank ceil(0.95 * 100) = 95: total 4000 + 94 * 20 = 5880, execution 15 ms less
    assert rows["Exec P95"].actual == 5865.0
    assert rows["Exec P95"].margin == -865.0
    assert rows["Exec P95"].status == "FAIL"
    assert rows["Success rate"].margin == 1.0


def test_breakdown_splits_mean_total_into_parts():
    """Execution, queue and overhead shares of the mean total add up to 100%."""
    stats = RunStats.from_records([rec(200.0, delay=50, execution=100)] * 3)
    assert stats.breakdown_pct() == Breakdown(execution=50.0, queue=25.0, overhead=25.0)


def test_tokens_per_second_is_output_tokens_over_execution_time():
    """tokens/s = output tokens / execution seconds of successful requests."""
    stats = RunStats.from_records([rec(600.0, delay=0, execution=500, tokens=40)] * 2)
    assert stats.tokens_per_second == pytest.approx(80.0)


_outcomes = st.sampled_from(list(Outcome))
_records = st.lists(
    st.builds(
        lambda total, delay, outcome, start, reason: rec(
            total,
            delay=delay,
            outcome=outcome,
            start=start,
            error=None if outcome is Outcome.OK else reason,
        ),
        st.floats(20, 20_000, allow_nan=False),
        st.one_of(st.none(), st.floats(0, 10, allow_nan=False)),
        _outcomes,
        st.floats(1000, 1100, allow_nan=False),
        st.sampled_from(["a", "b", "c", "d", "e"]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_records, _records, _records)
def test_merge_equals_stats_over_the_union(a, b, c):
    """Merging shard stats (any grouping) equals stats built from all records at once."""
    kw: dict[str, Any] = {"window_s": 5.0, "origin": 1000.0}
    parts = [RunStats.from_records(p, **kw) for p in (a, b, c)]
    whole = RunStats.from_records(a + b + c, **kw)
    assert parts[0].merge(parts[1]).merge(parts[2]) == whole
    assert parts[2].merge(parts[0].merge(parts[1])) == whole
    assert whole.merge(RunStats(**kw)).to_summary(Slo(), 1) == whole.to_summary(Slo(), 1)


def test_stats_round_trip_through_json():
    """from_json(to_json()) gives equal stats, windows included."""
    stats = RunStats.from_records(
        [rec(100.0, start=1000.0 + i, seq=i) for i in range(10)], window_s=2.0, origin=1000.0
    )
    again = RunStats.from_json(stats.to_json())
    assert again == stats
    assert again.to_summary(Slo(), 1) == stats.to_summary(Slo(), 1)
    assert sorted(again.windows) == [0, 1, 2, 3, 4]


def test_merge_refuses_different_windows():
    """Shards whose windows do not line up cannot be merged silently."""
    with pytest.raises(ValueError, match="different windows"):
        RunStats(window_s=1, origin=0).merge(RunStats(window_s=1, origin=5))


@pytest.mark.parametrize("df", [1, 2, 5, 10, 29, 30, 31, 60, 1000])
def test_t_quantile_matches_scipy(df):
    """The built-in t(0.975) quantile agrees with scipy to 1e-3."""
    scipy_stats = pytest.importorskip("scipy.stats")
    assert t_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-3)


def test_fit_trend_recovers_a_known_slope():
    """OLS on y = 2x + 1 plus alternating noise: slope 2 inside a narrow 95% CI."""
    xs = [float(x) for x in range(10)]
    ys = [2 * x + 1 + (0.1 if i % 2 else -0.1) for i, x in enumerate(xs)]
    trend = fit_trend(xs, ys)
    assert trend is not None
    assert trend.slope == pytest.approx(2.0, abs=0.05)
    assert trend.ci_low < 2.0 < trend.ci_high
    assert trend.ci_high - trend.ci_low < 0.2
    assert fit_trend([0.0, 1.0], [1.0, 2.0]) is None


def _soak(totals_per_window: list[list[float]], *, failures: int = 0) -> RunStats:
    records: list[RequestRecord] = []
    for w, totals in enumerate(totals_per_window):
        for i, total in enumerate(totals):
            done = 1000.0 + w * 10 + (i + 1) * 10 / (len(totals) + 1)
            records.append(rec(total, start=done - total / 1000, seq=len(records)))
    records += [rec(100.0, outcome=Outcome.FAILED, error="boom", start=1001)] * failures
    return RunStats.from_records(records, window_s=10.0, origin=1000.0)


def _checks(stats: RunStats) -> dict[str, bool]:
    verdict = soak_verdict(stats, p95_threshold_ms=4000, min_change_pct=10)
    return {c.check: c.passed for c in verdict.checks} | {"all": verdict.passed}


def test_soak_with_flat_windows_passes():
    """Stable per-window latency and throughput pass every soak check."""
    noise = [0, 30, -20, 10, -10, 25, -5, 15]
    stats = _soak([[2000 + noise[(w + i) % 8] for i in range(20)] for w in range(8)])
    assert _checks(stats)["all"] is True


def test_soak_with_rising_p95_fails_the_trend_test():
    """P95 rising window by window fails 'no P95 degradation' though under the limit."""
    stats = _soak([[1500 + 150 * w + i for i in range(20)] for w in range(8)])
    checks = _checks(stats)
    assert checks["no P95 degradation"] is False
    assert checks["P95 < 4000 ms in every window"] is True


def test_soak_with_falling_throughput_fails():
    """Fewer completions per window over time fails 'no throughput degradation'."""
    stats = _soak([[2000.0] * (30 - 3 * w) for w in range(8)])
    assert _checks(stats)["no throughput degradation"] is False


def test_soak_fails_on_any_failure_or_window_over_the_limit():
    """One failed request, or one window's P95 over the limit, fails the soak."""
    assert _checks(_soak([[2000.0] * 10] * 4, failures=1))["zero failures"] is False
    spiky = _soak([[2000.0] * 10, [2000.0] * 10, [4500.0] * 10, [2000.0] * 10])
    assert _checks(spiky)["P95 < 4000 ms in every window"] is False


def test_soak_with_too_few_windows_is_unproven():
    """Two windows cannot carry a trend test: the soak does not pass."""
    checks = _checks(_soak([[2000.0] * 10] * 2))
    assert checks["enough windows for a trend test"] is False
    assert checks["all"] is False


# Only Total P95 can be tight: the other lines have room to spare at every level below.
_SWEEP_SLO = Slo(exec_p50_ms=1e5, exec_p95_ms=1e5, total_p50_ms=1e5, total_p95_ms=4000)


def _level(concurrency: int, total_ms: float) -> LevelSummary:
    records = [rec(total_ms, seq=i) for i in range(20)]
    return RunStats.from_records(records).to_summary(_SWEEP_SLO, concurrency)


def test_sweep_recommends_the_highest_passing_level_with_its_tightest_margin():
    """The recommendation is the highest PASS level; its tightest latency line is named."""
    rows = sweep_rows([_level(3, 3000), _level(1, 1000), _level(4, 6000)])
    assert [(r.concurrency, r.status) for r in rows] == [(1, "PASS"), (3, "PASS"), (4, "FAIL")]
    assert rows[1].queue_p50_ms == 10.0
    best = recommend(rows)
    assert best is not None
    assert best.concurrency == 3
    assert best.tightest.metric == "Total P95"
    assert best.tightest.margin_pct == 25.0
    assert best.failed_levels == (4,)
    assert recommend([r for r in rows if r.status == "FAIL"]) is None


def test_a_passing_level_above_a_failing_one_is_not_recommended():
    """1 PASS, 2 FAIL, 3 PASS: the recommendation is 1; level 3 passing was luck."""
    best = recommend(sweep_rows([_level(1, 1000), _level(2, 6000), _level(3, 3000)]))
    assert best is not None
    assert best.concurrency == 1
    assert best.failed_levels == (2,)


def test_success_rate_keeps_three_decimals():
    """98.96% success is shown as 98.96 with a -0.04 margin, not rounded up to 99.0."""
    records = [rec(100.0, seq=i) for i in range(9896)]
    records += [rec(100.0, seq=10_000 + i, outcome=Outcome.FAILED) for i in range(104)]
    rows = {row.metric: row for row in RunStats.from_records(records).slo_rows(Slo())}
    assert rows["Success rate"].actual == 98.96
    assert rows["Success rate"].margin == -0.04
    assert rows["Success rate"].status == "FAIL"


def test_summary_of_no_requests_fails_cleanly():
    """An empty run has no percentiles and fails every SLO line instead of crashing."""
    summary = RunStats().to_summary(Slo(), 1)
    assert summary.requests == 0
    assert summary.slo.passed is False
    assert all(r.actual is None for r in summary.slo.rows)
    assert summary.breakdown_pct == Breakdown(execution=None, queue=None, overhead=None)


def test_soak_trend_evidence_reads_without_scientific_notation():
    """A steep P95 trend's slope and 95% CI are plain numbers (+12000, not +1.2e+04)."""
    stats = _soak([[1500 + 2000 * w + i for i in range(20)] for w in range(8)])
    verdict = soak_verdict(stats, p95_threshold_ms=100_000, min_change_pct=10)
    detail = next(c.detail for c in verdict.checks if c.check == "no P95 degradation")
    assert "e+" not in detail
    assert re.match(r"slope \+\d{5} ms/min, 95% CI \[\+\d{5}, \+\d{5}\]", detail), detail
