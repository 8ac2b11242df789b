"""Sweeps: one row per concurrency level, and which level to run at.

The recommendation is the highest concurrency whose run met every SLO line, reported with
its tightest margin (the SLO line with the least headroom, as a share of its threshold):
that is how close the recommended level is to failing. Asked to (``--recommend-by
goodput``), it is instead the level with the highest goodput -- the most requests per second
that each met every per-request target, which is what a chat endpoint sells (vLLM's
``bench serve --goodput``): past that level, more concurrency buys slower answers, not more
good ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from podpulse.common.probe_spec import RecommendBy
from podpulse.common.summary import (
    LevelSummary,
    Recommendation,
    SloRow,
    SweepResult,
    SweepRow,
    Tightest,
    best_row,
)

__all__ = ["recommend", "sweep_result", "sweep_rows"]


def sweep_rows(levels: Sequence[LevelSummary]) -> tuple[SweepRow, ...]:
    """Concurrency | Total P50 | Exec P50 | Queue P50 | Status, from each level's summary."""
    rows = []
    for summary in sorted(levels, key=lambda level: level.concurrency):
        latency = summary.latency_ms
        tightest = _tightest(summary.slo.rows)
        rows.append(
            SweepRow(
                concurrency=summary.concurrency,
                total_p50_ms=latency.total.p50,
                total_p95_ms=latency.total.p95,
                exec_p50_ms=latency.exec.p50,
                queue_p50_ms=latency.delay.p50,
                success_rate_pct=summary.success_rate_pct,
                status="PASS" if summary.slo.passed else "FAIL",
                tightest=Tightest(
                    metric=tightest.metric,
                    margin=tightest.margin,
                    margin_pct=tightest.margin_pct,
                    unit=tightest.unit,
                ),
                goodput_rps=summary.goodput.rps if summary.goodput else None,
                ttft_p95_ms=latency.ttft.p95 if latency.ttft else None,
            )
        )
    return tuple(rows)


def _tightest(slo_rows: Sequence[SloRow]) -> SloRow:
    """The SLO line closest to failing: a failing line if any, else the latency line with the
    least headroom relative to its threshold. A passing success rate is left out: 100% against
    99% is "1 point of headroom", which is not comparable with milliseconds and would always
    look tightest."""
    failing = [row for row in slo_rows if row.status == "FAIL"]
    candidates = failing or [row for row in slo_rows if row.unit == "ms"] or list(slo_rows)
    return min(
        candidates,
        key=lambda r: float("-inf") if r.margin_pct is None else r.margin_pct,
    )


def recommend(rows: Sequence[SweepRow], by: RecommendBy = "slo") -> Recommendation | None:
    """By the SLO: the highest concurrency that passes with every lower level passing too,
    and its tightest margin; None when the lowest level fails. A lone passing level above a
    failing one is luck, not capacity, so it is never recommended. By goodput: the level
    with the highest goodput (the lowest on a tie); None when no request was good."""
    recommended = best_row(tuple(sorted(rows, key=lambda r: r.concurrency)), by)
    if recommended is None:
        return None
    return Recommendation(
        concurrency=recommended.concurrency,
        tightest=recommended.tightest,
        failed_levels=tuple(row.concurrency for row in rows if row.status == "FAIL"),
    )


def sweep_result(levels: Sequence[LevelSummary], by: RecommendBy = "slo") -> SweepResult:
    """A sweep's table and recommendation from its levels' summaries."""
    rows = sweep_rows(levels)
    return SweepResult(table=rows, recommendation=recommend(rows, by), recommend_by=by)
