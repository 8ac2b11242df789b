"""How the command line shows a ``RunSummary``: SLO tables, a sweep's table, a soak's verdict.

Text from the summary (endpoint, failure reasons, check evidence) is escaped: rich would read
"[/x]" in an endpoint id or an error message as markup, and fail on it.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from podpulse.common.output import console, plain
from podpulse.common.summary import LevelSummary, RunSummary, SoakVerdict, SweepResult

__all__ = ["show_summary"]


def show_summary(summary: RunSummary, *, as_json: bool) -> None:
    """Print the summary's tables and verdict on stdout (or summary.json's text)."""
    if as_json:
        sys.stdout.write(summary.model_dump_json(indent=2) + "\n")
        return
    out = console()
    target = summary.target
    out.print(
        f"target: {target.kind} {escape(target.endpoint_id)} at {escape(target.base_url)}",
        highlight=False,
    )
    if summary.sweep is not None:
        _sweep_table(out, summary, summary.sweep)
    else:
        _slo_table(out, summary.level, f"SLO: {summary.kind} {summary.run_id}")
        if summary.soak is not None:
            _soak_tables(out, summary.soak)
    if summary.shards is not None:
        shards = summary.shards
        out.print(
            f"[yellow]shards: {len(shards.failed)} of {shards.count} failed, "
            f"missing {list(shards.missing)}[/yellow]"
        )
        for shard, reason in sorted(shards.failed.items()):
            out.print(f"  shard {shard}: {escape(reason)}", highlight=False)
    if summary.interrupted:
        out.print("[yellow]interrupted: partial results[/yellow]")
    verdict = "[green]PASS[/green]" if summary.passed else "[red]FAIL[/red]"
    out.print(f"verdict: {verdict}  ({summary.run_id})")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _status(text: str) -> str:
    return f"[green]{text}[/green]" if text == "PASS" else f"[red]{text}[/red]"


def _slo_table(out: Console, level: LevelSummary, title: str) -> None:
    table = Table(title=title)
    for column in ("Metric", "SLO", "Actual", "Margin", "Status"):
        table.add_column(column, justify="left" if column in ("Metric", "SLO") else "right")
    for row in level.slo.rows:
        actual, margin = row.actual, row.margin
        if row.unit == "%":
            shown = "-" if actual is None else f"{actual:.2f}%"
            headroom = "-" if margin is None else f"{margin:+.2f} pts"
        else:
            shown = "-" if actual is None else f"{actual:,.0f} ms"
            share = "" if row.margin_pct is None else f" ({row.margin_pct:+.0f}%)"
            headroom = "-" if margin is None else f"{margin:+,.0f} ms{share}"
        table.add_row(row.metric, escape(row.slo), shown, headroom, _status(row.status))
    out.print(table)
    breakdown = level.breakdown_pct
    parts = (
        ", ".join(
            f"{name} {value:.1f}%"
            for name, value in (
                ("execution", breakdown.execution),
                ("queue", breakdown.queue),
                ("overhead", breakdown.overhead),
            )
            if value is not None
        )
        or "n/a (no queue or execution times on this API)"
    )
    failures = ", ".join(f"{k} {v.count}" for k, v in level.failures.items()) or "none"
    out.print(
        f"{level.requests} requests, success {level.success_rate_pct}%, "
        f"failures: {failures}; 429s: {level.rate_limited_responses}; "
        f"total = {parts}; tokens/s {_or_na(level.tokens.tokens_per_second)}"
    )
    for kind, failure in level.failures.items():
        for example in failure.examples:
            out.print(f"  {kind}: {escape(example)}", highlight=False)
    _chat_table(out, level)
    _goodput_line(out, level)


def _chat_table(out: Console, level: LevelSummary) -> None:
    """TTFT, ITL and TPOT percentiles, for a level whose requests streamed."""
    latency = level.latency_ms
    metrics = (("TTFT", latency.ttft), ("ITL", latency.itl), ("TPOT", latency.tpot))
    if all(stats is None for _, stats in metrics):
        return
    table = Table(title="what a chat user feels (ms)")
    for column in ("Metric", "P50", "P90", "P95", "P99", "Mean", "Count"):
        table.add_column(column, justify="left" if column == "Metric" else "right")
    for name, stats in metrics:
        if stats is None:
            continue
        table.add_row(
            name,
            *(
                _ms_fine(value)
                for value in (stats.p50, stats.p90, stats.p95, stats.p99, stats.mean)
            ),
            str(stats.count),
        )
    out.print(table)


def _ms_fine(value: float | None) -> str:
    # TPOT and ITL are tens of ms: a whole-ms rounding would hide most of a change.
    return "-" if value is None else f"{value:,.1f}"


def _goodput_line(out: Console, level: LevelSummary) -> None:
    goodput = level.goodput
    if goodput is None:
        return
    targets = [f"total <= {goodput.total_ms:g} ms"]
    if goodput.ttft_ms is not None:
        targets.append(f"TTFT <= {goodput.ttft_ms:g} ms")
    if goodput.tpot_ms is not None:
        targets.append(f"TPOT <= {goodput.tpot_ms:g} ms")
    rps = "n/a" if goodput.rps is None else f"{goodput.rps:.3f} req/s"
    out.print(
        f"goodput: {rps} ({goodput.good} of {level.ok} completed requests met {', '.join(targets)})"
    )


def _sweep_table(out: Console, summary: RunSummary, sweep: SweepResult) -> None:
    table = Table(title=f"sweep {summary.run_id}")
    streamed = any(row.ttft_p95_ms is not None for row in sweep.table)
    # The goodput column where it matters (a chat run, or a recommendation by it), so a
    # whole-answer sweep's table keeps fitting an 80-column terminal.
    show_goodput = streamed or sweep.recommend_by == "goodput"
    columns = ["Concurrency", "Total P50", "Exec P50", "Queue P50", "Total P95"]
    columns += ["TTFT P95"] if streamed else []
    columns += ["Goodput"] if show_goodput else []
    for column in (*columns, "Status"):
        table.add_column(column, justify="right")
    for row in sweep.table:
        cells = [
            str(row.concurrency),
            f"{_ms(row.total_p50_ms)} ms",
            f"{_ms(row.exec_p50_ms)} ms",
            f"{_ms(row.queue_p50_ms)} ms",
            f"{_ms(row.total_p95_ms)} ms",
        ]
        if streamed:
            cells.append(f"{_ms(row.ttft_p95_ms)} ms")
        if show_goodput:
            cells.append("-" if row.goodput_rps is None else f"{row.goodput_rps:.2f}/s")
        table.add_row(*cells, _status(row.status))
    out.print(table)
    shown = summary.level
    _slo_table(out, shown, f"SLO at concurrency {shown.concurrency}")
    rec = sweep.recommendation
    if rec is None:
        reason = (
            "no request met every goodput target"
            if sweep.recommend_by == "goodput"
            else "no concurrency level met the SLO"
        )
        out.print(f"[red]recommendation: none, {reason}[/red]")
        return
    tight = rec.tightest
    if sweep.recommend_by == "goodput":
        out.print(
            f"recommendation: concurrency [bold]{rec.concurrency}[/bold], the highest goodput "
            "(requests/s that met every per-request target)"
        )
        if rec.failed_levels:
            out.print(f"[yellow]levels that failed the SLO: {list(rec.failed_levels)}[/yellow]")
        return
    margin = "-" if tight.margin is None else f"{tight.margin:+,.1f} {tight.unit}"
    share = "" if tight.margin_pct is None else f" ({tight.margin_pct:+.1f}% of the threshold)"
    out.print(
        f"recommendation: concurrency [bold]{rec.concurrency}[/bold], the highest that meets "
        f"the SLO; tightest margin {escape(tight.metric)} {margin}{share}"
    )
    if rec.failed_levels:
        out.print(f"[yellow]levels that failed: {list(rec.failed_levels)}[/yellow]")


def _soak_tables(out: Console, soak: SoakVerdict) -> None:
    windows = Table(title=f"soak windows ({plain(soak.window_s, digits=6)} s)")
    for column in ("Window", "Start", "Length", "Requests", "Failures", "P50", "P95", "req/s"):
        windows.add_column(column, justify="right")
    for w in soak.windows:
        windows.add_row(
            f"{w.index} (partial)" if w.partial else str(w.index),
            f"{plain(w.start_s, digits=6)} s",
            f"{plain(w.covered_s, digits=6)} s",
            str(w.requests),
            str(w.failures),
            _ms(w.p50_ms),
            _ms(w.p95_ms),
            "-" if w.throughput_rps is None else f"{w.throughput_rps:.2f}",
        )
    out.print(windows)
    checks = Table(title="soak verdict")
    for column in ("Check", "Status", "Evidence"):
        checks.add_column(column)
    for check in soak.checks:
        checks.add_row(
            escape(check.check), _status("PASS" if check.passed else "FAIL"), escape(check.detail)
        )
    out.print(checks)
    if soak.plot:
        out.print(f"plot: {escape(soak.plot)}, report: report.md", highlight=False)


def _or_na(value: float | None) -> str:
    # A run whose endpoint reports no token counts has no decode speed to show.
    return "n/a" if value is None else plain(value, digits=6)
