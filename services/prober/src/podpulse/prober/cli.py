"""``podpulse loadtest``, ``podpulse soak`` and ``podpulse report``.

The target is the hosted endpoint when RUNPOD_ENDPOINT_ID (and RUNPOD_API_KEY) are set, else
a local twin with real workers started for the run. Exit codes, as k6's thresholds: 0 when
the SLO (or the soak) passed, 1 when it failed, 2 for bad flags or settings, 130 on Ctrl-C
(after writing the partial summary).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from podpulse.common.settings import CommonSettings, TelemetrySettings, describe_settings_error
from podpulse.common.telemetry import configure_telemetry, shutdown_telemetry

from ._probe import ProbeSpec, run_probe
from ._prompts import PromptSetError, load_prompts
from ._records import RequestRecord
from ._results import new_run_id, read_records, read_summary, run_dir
from ._summary import RunStats
from ._target import TargetError, resolve_target
from .settings import ProberSettings

__all__ = ["loadtest", "report", "soak"]

_EXIT_FAILED, _EXIT_USAGE, _EXIT_INTERRUPTED = 1, 2, 130
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _usage(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(_EXIT_USAGE)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise _usage(
            f"--concurrency takes numbers separated by commas (1,2,3,4), got {text!r}"
        ) from None
    if not levels or any(level < 1 for level in levels):
        raise _usage(f"--concurrency levels must be >= 1, got {text!r}")
    return levels


def _seconds(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise _usage(f"{flag} takes a positive duration like 90, 90s, 30m or 1h, got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def _settings() -> tuple[ProberSettings, CommonSettings]:
    try:
        return ProberSettings(), CommonSettings()
    except ValidationError as exc:
        problems = describe_settings_error(exc)
        raise _usage(f"invalid settings in the environment: {problems}") from None


def _spec(**fields: Any) -> ProbeSpec:
    try:
        return ProbeSpec.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'flags'}: {e['msg']}" for e in exc.errors()
        )
        raise _usage(problems) from None


@contextmanager
def _progress(spec: ProbeSpec, quiet: bool) -> Iterator[Any]:
    """A progress bar per concurrency level on stderr; yields the on_record callback."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )
    tasks = {
        level: progress.add_task(f"{spec.kind} c={level}", total=spec.runs, failed=0, start=False)
        for level in spec.concurrency
    }
    failed = dict.fromkeys(tasks, 0)

    def on_record(record: RequestRecord) -> None:
        task = tasks[record.concurrency]
        progress.start_task(task)
        failed[record.concurrency] += 0 if record.ok else 1
        progress.update(task, advance=1, failed=failed[record.concurrency])

    with progress:
        yield on_record


def _run(
    spec: ProbeSpec,
    settings: ProberSettings,
    common: CommonSettings,
    results_dir: Path,
    as_json: bool,
) -> None:
    """Run the probe on the configured target, print the result, exit with its verdict."""
    try:
        load_prompts(spec.prompts or settings.prompts_path)
    except PromptSetError as exc:
        raise _usage(str(exc)) from None
    folder = run_dir(results_dir, spec.run_id)
    if any(folder.glob("requests*.csv")):
        # Checked before an embedded twin starts; the writer refuses it too.
        raise _usage(
            f"run {spec.run_id!r} already exists in {folder.parent}; choose another --run-id"
        )
    err = Console(stderr=True)
    # Spans only when asked for: a one-off run on a laptop has no collector, and the SDK's
    # default OTLP exporter would retry against localhost:4318 and hold the exit for seconds.
    tracing = "otel_traces_exporter" in TelemetrySettings().model_fields_set
    if tracing:
        configure_telemetry("podpulse-prober")
    try:
        with resolve_target(settings, common) as target, _progress(spec, as_json) as on_record:
            where = "hosted endpoint" if target.kind == "hosted" else "embedded twin"
            err.print(f"{spec.kind} {spec.run_id} on {where} {target.endpoint_id}")
            asyncio.run(
                run_probe(spec, target, results_dir, settings=settings, on_record=on_record)
            )
    except TargetError as exc:
        raise _usage(str(exc)) from None
    except KeyboardInterrupt:
        err.print(
            f"interrupted: partial summary in {run_dir(results_dir, spec.run_id) / 'summary.json'}"
        )
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    finally:
        if tracing:
            shutdown_telemetry()
    summary = read_summary(run_dir(results_dir, spec.run_id))
    _show(summary, as_json)
    if not summary["passed"]:
        raise typer.Exit(_EXIT_FAILED)


# Options loadtest and soak share.
WarmupOption = Annotated[int | None, typer.Option(min=0, help="Unmeasured warm-up requests.")]
TimeoutOption = Annotated[
    float | None, typer.Option(min=0.001, help="Per-request timeout in seconds.")
]
PromptsOption = Annotated[Path | None, typer.Option(help="Prompt-set JSONL file.")]
ResultsDirOption = Annotated[Path | None, typer.Option(help="Where runs are written.")]
RunIdOption = Annotated[str | None, typer.Option(help="Name of the run's folder.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print summary.json only.")]


def loadtest(
    concurrency: Annotated[
        str | None,
        typer.Option(
            help="Concurrency, or levels for a sweep: 1,2,3,4 (default 1). Open loop: the cap "
            "on requests in flight (default none)."
        ),
    ] = None,
    runs: Annotated[int | None, typer.Option(min=1, help="Measured requests per level.")] = None,
    duration: Annotated[
        str | None, typer.Option(help="Length of each level: 90, 90s, 5m, 1h.")
    ] = None,
    arrival: Annotated[
        str, typer.Option(help="closed (fixed concurrency), constant or poisson (open loop).")
    ] = "closed",
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Open loop: requests per second.")
    ] = None,
    warmup: WarmupOption = None,
    timeout: TimeoutOption = None,
    prompts: PromptsOption = None,
    results_dir: ResultsDirOption = None,
    run_id: RunIdOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load test: the SLO table per level; several levels make a sweep with a recommendation.

    Exits 1 when the SLO fails (a sweep: when no level can be recommended). Set
    OTEL_TRACES_EXPORTER to emit one runpod.job span per request.
    """
    settings, common = _settings()
    if arrival not in ("closed", "constant", "poisson"):
        raise _usage(f"--arrival must be closed, constant or poisson, got {arrival!r}")
    levels = _levels(concurrency) if concurrency else ((1,) if arrival == "closed" else (0,))
    seconds = _seconds(duration, "--duration")
    if runs is None and seconds is None:
        runs = 30
    kind = "sweep" if len(levels) > 1 else "load"
    spec = _spec(
        kind=kind,
        run_id=run_id or new_run_id(kind),
        concurrency=levels,
        runs=runs,
        duration_s=seconds,
        arrival=arrival,
        rate=rate,
        warmup=settings.warmup if warmup is None else warmup,
        timeout_s=timeout or settings.timeout_s,
        prompts=prompts,
    )
    _run(spec, settings, common, results_dir or settings.results_dir, as_json)


def soak(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Concurrency (2).")] = None,
    duration: Annotated[
        str | None, typer.Option(help="Length: 30m, 1h, 1800 (default from settings).")
    ] = None,
    runs: Annotated[int | None, typer.Option(min=1, help="Stop after this many requests.")] = None,
    window: Annotated[str | None, typer.Option(help="Window length: 60s, 5m.")] = None,
    warmup: WarmupOption = None,
    timeout: TimeoutOption = None,
    prompts: PromptsOption = None,
    results_dir: ResultsDirOption = None,
    run_id: RunIdOption = None,
    as_json: JsonOption = False,
) -> None:
    """Soak: fixed concurrency for a while; per-window P50/P95, trend tests, plot, report."""
    settings, common = _settings()
    seconds = _seconds(duration, "--duration")
    if seconds is None and runs is None:
        seconds = settings.soak_duration_s
    spec = _spec(
        kind="soak",
        run_id=run_id or new_run_id("soak"),
        concurrency=(concurrency or settings.soak_concurrency,),
        runs=runs,
        duration_s=seconds,
        window_s=_seconds(window, "--window") or settings.soak_window_s,
        warmup=settings.warmup if warmup is None else warmup,
        timeout_s=timeout or settings.timeout_s,
        prompts=prompts,
    )
    _run(spec, settings, common, results_dir or settings.results_dir, as_json)


def report(
    run_id: Annotated[str, typer.Argument(help="The run's folder name under the results dir.")],
    results_dir: Annotated[Path | None, typer.Option(help="Where runs are written.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json only.")] = False,
) -> None:
    """Show a run's summary; rebuilt from requests.csv when the run died before writing one."""
    settings, _ = _settings()
    try:
        folder = run_dir(results_dir or settings.results_dir, run_id)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    try:
        if (folder / "summary.json").exists():
            summary = read_summary(folder)
        elif any(folder.glob("requests*.csv")):
            summary = _rebuild(folder, settings)
        else:
            raise _usage(f"no run {run_id!r} in {folder.parent} (no summary.json or requests.csv)")
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        # A damaged run folder is bad input: say which file and why, never a traceback.
        raise _usage(f"run {run_id!r} cannot be read: {type(exc).__name__}: {exc}") from None
    _show(summary, as_json)
    if not summary["passed"]:
        raise typer.Exit(_EXIT_FAILED)


def _rebuild(folder: Path, settings: ProberSettings) -> dict[str, Any]:
    from ._probe import summarize

    records = read_records(folder)
    spec_path = folder / "spec.json"
    spec = ProbeSpec.model_validate_json(spec_path.read_text(encoding="utf-8"))
    window = (spec.window_s or settings.soak_window_s) if spec.kind == "soak" else None
    origin = records[0].intended if records and window else None
    levels: dict[int, RunStats] = {}
    for record in records:
        levels.setdefault(record.concurrency, RunStats(window_s=window, origin=origin)).add(record)
    return summarize(spec, levels, settings, interrupted=True)


def _show(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return
    out = Console()
    if summary["kind"] == "sweep":
        _sweep_table(out, summary)
    else:
        _slo_table(out, summary, f"SLO: {summary['kind']} {summary['run_id']}")
        if "soak" in summary:
            _soak_tables(out, summary["soak"])
    if summary.get("interrupted"):
        out.print("[yellow]interrupted: partial results[/yellow]")
    verdict = "[green]PASS[/green]" if summary["passed"] else "[red]FAIL[/red]"
    out.print(f"verdict: {verdict}  ({summary['run_id']})")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _status(text: str) -> str:
    return f"[green]{text}[/green]" if text == "PASS" else f"[red]{text}[/red]"


def _slo_table(out: Console, summary: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for column in ("Metric", "SLO", "Actual", "Margin", "Status"):
        table.add_column(column, justify="left" if column in ("Metric", "SLO") else "right")
    for row in summary["slo"]["rows"]:
        unit = row["unit"]
        actual, margin = row["actual"], row["margin"]
        if unit == "%":
            shown = "-" if actual is None else f"{actual:.2f}%"
            headroom = "-" if margin is None else f"{margin:+.2f} pts"
        else:
            shown = "-" if actual is None else f"{actual:,.0f} ms"
            headroom = "-" if margin is None else f"{margin:+,.0f} ms ({row['margin_pct']:+.0f}%)"
        table.add_row(
            row["metric"],
            row["slo"],
            shown,
            headroom,
            _status(row["status"]),
        )
    out.print(table)
    breakdown = summary["breakdown_pct"]
    parts = ", ".join(
        f"{name} {value:.1f}%" for name, value in breakdown.items() if value is not None
    )
    failures = ", ".join(f"{k} {v['count']}" for k, v in summary["failures"].items()) or "none"
    out.print(
        f"{summary['requests']} requests, success {summary['success_rate_pct']}%, "
        f"failures: {failures}; 429s: {summary['rate_limited_responses']}; "
        f"total = {parts}; tokens/s {summary['tokens']['tokens_per_second']}"
    )
    for kind, failure in summary["failures"].items():
        for example in failure["examples"]:
            out.print(f"  {kind}: {example}", highlight=False)


def _sweep_table(out: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"sweep {summary['run_id']}")
    for column in ("Concurrency", "Total P50", "Exec P50", "Queue P50", "Total P95", "Status"):
        table.add_column(column, justify="right")
    for row in summary["table"]:
        table.add_row(
            str(row["concurrency"]),
            f"{_ms(row['total_p50_ms'])} ms",
            f"{_ms(row['exec_p50_ms'])} ms",
            f"{_ms(row['queue_p50_ms'])} ms",
            f"{_ms(row['total_p95_ms'])} ms",
            _status(row["status"]),
        )
    out.print(table)
    rec = summary["recommendation"]
    shown = str(rec["concurrency"]) if rec else str(max(summary["levels"], key=int))
    _slo_table(out, summary["levels"][shown], f"SLO at concurrency {shown}")
    if rec is None:
        out.print("[red]recommendation: none, no concurrency level met the SLO[/red]")
        return
    tight = rec["tightest"]
    out.print(
        f"recommendation: concurrency [bold]{rec['concurrency']}[/bold], the highest that meets "
        f"the SLO; tightest margin {tight['metric']} {tight['margin']:+,.1f} {tight['unit']} "
        f"({tight['margin_pct']:+.1f}% of the threshold)"
    )
    if rec["failed_levels"]:
        out.print(f"[yellow]levels that failed: {rec['failed_levels']}[/yellow]")


def _soak_tables(out: Console, soak: dict[str, Any]) -> None:
    windows = Table(title=f"soak windows ({soak['window_s']:g} s)")
    for column in ("Window", "Start", "Requests", "Failures", "P50", "P95", "req/s"):
        windows.add_column(column, justify="right")
    for w in soak["windows"]:
        windows.add_row(
            str(w["index"]),
            f"{w['start_s']:g} s",
            str(w["requests"]),
            str(w["failures"]),
            _ms(w["p50_ms"]),
            _ms(w["p95_ms"]),
            "-" if w["throughput_rps"] is None else f"{w['throughput_rps']:.2f}",
        )
    out.print(windows)
    checks = Table(title="soak verdict")
    for column in ("Check", "Status", "Evidence"):
        checks.add_column(column)
    for check in soak["checks"]:
        checks.add_row(
            check["check"], _status("PASS" if check["passed"] else "FAIL"), check["detail"]
        )
    out.print(checks)
    if soak.get("plot"):
        out.print(f"plot: {soak['plot']}, report: report.md")
