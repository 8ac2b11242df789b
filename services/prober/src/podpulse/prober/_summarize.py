"""From a run's statistics to its ``RunSummary``: per-level SLO verdicts, a sweep's table, a
soak's verdict with its plot and report, and the run's one verdict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import read_records
from podpulse.common.summary import SCHEMA_VERSION, RunSummary, ShardInfo, Slo, TargetInfo

from ._results_dir import run_dir, write_summary_file
from ._run_stats import RunStats
from ._soak import soak_report, soak_verdict
from ._sweep import sweep_result
from .settings import ProberSettings

__all__ = ["PLOT_FILE", "REPORT_FILE", "slo_of", "summarize", "write_summary"]

PLOT_FILE = "latency.png"
REPORT_FILE = "report.md"


def summarize(
    spec: ProbeSpec,
    results: Mapping[int, RunStats],
    settings: ProberSettings,
    *,
    target: TargetInfo,
    interrupted: bool = False,
    shards: ShardInfo | None = None,
    end_reason: str | None = None,
) -> RunSummary:
    """The run's summary: every level's SLO table, a sweep's recommendation or a soak's verdict.

    ``passed``: the SLO held, a sweep found a level to recommend (it is there to find where
    the SLO breaks), or the soak passed -- and the run was complete. Failed or missing
    ``shards``, or an ``end_reason`` (the stop rule ended the run), make it interrupted.
    """
    slo = slo_of(settings)
    interrupted = interrupted or shards is not None or end_reason is not None
    if spec.kind == "sweep":
        # An interrupted sweep reports the levels it reached.
        ran = [level for level in spec.concurrency if level in results] or [spec.concurrency[0]]
    else:
        ran = [spec.concurrency[0]]
    levels = tuple(results.get(level, RunStats()).to_summary(slo, level) for level in sorted(ran))
    sweep = sweep_result(levels, spec.recommend_by) if spec.kind == "sweep" else None
    soak = None
    if spec.kind == "soak":
        stats = results.get(spec.concurrency[0])
        if stats is None or stats.window_s is None:
            raise ValueError(f"soak {spec.run_id}: its statistics were collected without windows")
        soak = soak_verdict(
            stats,
            p95_threshold_ms=settings.soak_p95_ms,
            min_change_pct=settings.soak_min_change_pct,
            duration_s=spec.duration_s,
        )
    if sweep is not None:
        evidence = sweep.recommendation is not None
    elif soak is not None:
        evidence = soak.passed
    else:
        evidence = levels[0].slo.passed
    return RunSummary(
        schema_version=SCHEMA_VERSION,
        run_id=spec.run_id,
        kind=spec.kind,
        target=target,
        interrupted=interrupted,
        end_reason=end_reason,
        passed=evidence and not interrupted,
        spec=spec,
        levels=levels,
        sweep=sweep,
        soak=soak,
        shards=shards,
    )


def write_summary(
    results_dir: Path,
    spec: ProbeSpec,
    results: Mapping[int, RunStats],
    settings: ProberSettings,
    *,
    target: TargetInfo,
    interrupted: bool = False,
    shards: ShardInfo | None = None,
    end_reason: str | None = None,
) -> RunSummary:
    """Write summary.json (and for a soak the plot and report.md); return the summary."""
    folder = run_dir(results_dir, spec.run_id)
    summary = summarize(
        spec,
        results,
        settings,
        target=target,
        interrupted=interrupted,
        shards=shards,
        end_reason=end_reason,
    )
    if summary.soak is not None:
        stats = results[spec.concurrency[0]]
        assert stats.window_s is not None
        records = read_records(folder)
        plot = None
        if records and stats.origin is not None:
            # Late: matplotlib costs ~0.2 s to import and only a soak draws.
            from ._plot import plot_latency

            plot = plot_latency(
                records,
                summary.soak.windows,
                origin=stats.origin,
                window_s=stats.window_s,
                threshold_ms=settings.soak_p95_ms,
                path=folder / PLOT_FILE,
                title=f"soak {spec.run_id}: total latency, window P95",
            ).name
        # The plot's name changes no verdict, so the copy needs no revalidation.
        soak = summary.soak.model_copy(update={"plot": plot})
        summary = summary.model_copy(update={"soak": soak})
        report = soak_report(spec.run_id, summary.level, soak)
        (folder / REPORT_FILE).write_text(report, encoding="utf-8")
    write_summary_file(folder, summary)
    return summary


def slo_of(settings: ProberSettings) -> Slo:
    """The SLO configured in the prober's settings."""
    return Slo(
        exec_p50_ms=settings.slo_exec_p50_ms,
        exec_p95_ms=settings.slo_exec_p95_ms,
        total_p50_ms=settings.slo_total_p50_ms,
        total_p95_ms=settings.slo_total_p95_ms,
        success_pct=settings.slo_success_pct,
        ttft_p95_ms=settings.slo_ttft_p95_ms,
        itl_p95_ms=settings.slo_itl_p95_ms,
        tpot_p95_ms=settings.slo_tpot_p95_ms,
    )
