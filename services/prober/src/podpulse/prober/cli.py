"""``podpulse loadtest``, ``podpulse soak`` and ``podpulse report``.

``--target hosted`` probes the endpoint RUNPOD_ENDPOINT_ID names (with RUNPOD_API_KEY);
``--target twin`` starts a local twin with real workers for the run. Without the flag: hosted
when RUNPOD_ENDPOINT_ID is set, else twin; either way the command says which it uses (kind,
endpoint id, base URL) before it starts. Exit codes, as k6's thresholds: 0 when the SLO (or
the soak) passed, 1 when it failed, 2 for bad flags, settings or a summary.json that does not
validate, 3 when the run ended itself because its endpoint could not be reached (the stop rule,
PROBER_ABORT_AFTER_*; the reason is one line on stderr and summary.json's end_reason), 130 on
Ctrl-C or SIGTERM (after writing the partial summary).

With --json, stdout carries the summary and nothing else: spans of OTEL_TRACES_EXPORTER=console
go to stderr, as every other diagnostic does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from podpulse.common.cli import env_default
from podpulse.common.output import console
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import RequestRecord, ResultsError, read_records
from podpulse.common.settings import CommonSettings, TelemetrySettings, describe_settings_error
from podpulse.common.summary import RunSummary, SummaryError, TargetKind, read_summary
from podpulse.common.telemetry import configure_telemetry, shutdown_telemetry

from ._probe import run_probe
from ._prompts import PromptSetError, load_prompts
from ._render import show_summary
from ._results_dir import (
    SPEC_FILE,
    SUMMARY_FILE,
    new_run_id,
    read_spec,
    read_target,
    run_dir,
)
from ._run_stats import RunStats, targets_of
from ._summarize import slo_of, summarize
from ._target import EmbeddedTwin, TargetError, default_target_kind, open_target
from .settings import ProberSettings

__all__ = ["loadtest", "report", "soak"]

T = TypeVar("T")

_EXIT_FAILED, _EXIT_USAGE, _EXIT_ABORTED, _EXIT_INTERRUPTED = 1, 2, 3, 130
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_DURATION_S = 366 * 86400.0


def _usage(message: str) -> typer.Exit:
    # soft_wrap: a long message stays one line, so it can be grepped and copied whole; a line
    # break or control character from the input (a JSON key, a file name) is shown escaped.
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)
    Console(stderr=True).print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
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


def _finite(value: float, flag: str) -> float:
    # typer parses "inf" and "nan" as floats; neither is a rate or a timeout.
    if not math.isfinite(value):
        raise _usage(f"{flag} takes a finite number, got {value}")
    return value


def _seconds(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    match = _DURATION.match(text)
    # A 400-digit number parses as float inf; a year is longer than any soak.
    seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"] if match else math.nan
    if not 0 < seconds <= _MAX_DURATION_S:
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
        raise _usage(
            f"{flag} takes a positive duration up to a year, like 90, 90s, 30m or 1h, got {shown!r}"
        )
    return seconds


def _results_dir(flag: Path | None, settings: ProberSettings) -> Path:
    """The results folder, created if need be; exit 2 when runs cannot be written there."""
    path = flag if flag is not None else settings.results_dir
    origin = "--results-dir" if flag is not None else "PROBER_RESULTS_DIR"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise _usage(f"{origin} {path} is not a folder") from None
    except OSError as exc:
        raise _usage(f"{origin} {path} cannot be created: {exc.strerror}") from None
    if not path.is_dir():
        raise _usage(f"{origin} {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise _usage(f"{origin} {path} is not writable")
    return path


def _from_env(build: Callable[[], T]) -> T:
    """``build()`` (settings read from the environment), or exit 2 naming what is wrong."""
    try:
        return build()
    except ValidationError as exc:
        problems = describe_settings_error(exc)
        raise _usage(f"invalid settings in the environment: {problems}") from None


def _settings() -> tuple[ProberSettings, CommonSettings]:
    return _from_env(lambda: (ProberSettings(), CommonSettings()))


def _spec(**fields: Any) -> ProbeSpec:
    try:
        return ProbeSpec.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'flags'}: {e['msg']}" for e in exc.errors()
        )
        raise _usage(problems) from None


def _target_kind(flag: str | None, common: CommonSettings) -> TargetKind:
    if flag is None:
        return default_target_kind(common)
    if flag not in ("hosted", "twin"):
        raise _usage(f"--target must be hosted or twin, got {flag!r}")
    return "hosted" if flag == "hosted" else "twin"


@contextmanager
def _progress(spec: ProbeSpec, quiet: bool) -> Iterator[Callable[[RequestRecord], None]]:
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
    options: _RunOptions,
) -> None:
    """Run the probe on the chosen target, print the result, exit with its verdict."""
    try:
        load_prompts(spec.prompts or settings.prompts_path)
    except PromptSetError as exc:
        raise _usage(str(exc)) from None
    folder = run_dir(options.results_dir, spec.run_id)
    if any(folder.glob("requests*.csv")):
        # Checked before an embedded twin starts; the writer refuses it too.
        raise _usage(
            f"run {spec.run_id!r} already exists in {folder.parent}; choose another --run-id"
        )
    err = console(stderr=True)
    # Spans only when asked for: a one-off run on a laptop has no collector, and the SDK's
    # default OTLP exporter would retry against localhost:4318 and hold the exit for seconds.
    telemetry = _from_env(TelemetrySettings)
    twin = _from_env(EmbeddedTwin.from_env) if options.target == "twin" else None
    tracing = "traces_exporter" in telemetry.model_fields_set
    if tracing:
        # stdout is the command's result (--json: nothing but the summary); spans are not.
        configure_telemetry("podpulse-prober", settings=telemetry, console_out=sys.stderr)
    try:
        with (
            _sigterm_as_sigint(),
            _quiet_twin(),
            open_target(options.target, common, twin, api=spec.api or settings.api) as target,
            _progress(spec, options.as_json) as on_record,
        ):
            err.print(
                f"{spec.kind} {spec.run_id} on target {target.kind}: endpoint "
                f"{target.endpoint_id} at {target.base_url}",
                highlight=False,
            )
            summary = asyncio.run(
                run_probe(spec, target, options.results_dir, settings=settings, on_record=on_record)
            )
    except TargetError as exc:
        raise _usage(str(exc)) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: partial summary in {folder / SUMMARY_FILE}")
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    finally:
        if tracing:
            shutdown_telemetry()
    _finish(summary, as_json=options.as_json)


@contextmanager
def _quiet_twin() -> Iterator[None]:
    """An embedded twin's info lines stay out of the command's output; debug level shows them.

    Its workers starting and stopping are the stage, not the result: on a terminal they would
    break into the progress bars, and without one they are JSON lines among the report. Its
    warnings and errors (a worker that died) still show.
    """
    twin_log = logging.getLogger("podpulse.twin")
    before = twin_log.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        twin_log.setLevel(max(logging.WARNING, before))
    try:
        yield
    finally:
        twin_log.setLevel(before)


@contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (docker stop, a CI timeout) ends the run as Ctrl-C does: partial summary, 130.

    It is turned into SIGINT, so the one path asyncio.run has for it (cancel the run, then
    KeyboardInterrupt) handles both, wherever the run is (starting the twin, or measuring).
    """

    def as_sigint(_signum: int, _frame: FrameType | None) -> None:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # Started with Ctrl-C ignored (a script's background job): a raised SIGINT would be
            # ignored too and the run would go on to its end, so interrupt it directly.
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(summary: RunSummary, *, as_json: bool) -> None:
    show_summary(summary, as_json=as_json)
    if summary.end_reason is not None:
        Console(stderr=True).print(
            f"[red]aborted:[/red] {summary.end_reason}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(_EXIT_ABORTED)
    if not summary.passed:
        raise typer.Exit(_EXIT_FAILED)


@dataclass(frozen=True)
class _RunOptions:
    """Where a command's run goes and how it is shown."""

    target: TargetKind
    results_dir: Path
    as_json: bool


# Options loadtest and soak share. The choices are checked in the command (one line on a bad
# value); the metavar lists them.
WarmupOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Unmeasured warm-up requests.",
        show_default=env_default(ProberSettings, "warmup"),
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        min=0.001,
        help="Per-request timeout in seconds.",
        show_default=env_default(ProberSettings, "timeout_s"),
    ),
]
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        help="Prompt-set JSONL file.",
        show_default="PROBER_PROMPTS_PATH, else the career questions shipped with podpulse",
    ),
]
ResultsDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Where runs are written.", show_default=env_default(ProberSettings, "results_dir")
    ),
]
RunIdOption = Annotated[
    str | None,
    typer.Option(
        help="Name of the run's folder.",
        show_default="a new one, like 20260115T030000Z-load-1a2b3c",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print summary.json only.")]
ApiOption = Annotated[
    str | None,
    typer.Option(
        metavar="<runsync|stream|openai>",
        help="How each request is sent: runsync (whole answers), stream (/run + /stream) or "
        "openai (RunPod's OpenAI route, streamed); the last two measure TTFT, ITL and TPOT.",
        show_default=env_default(ProberSettings, "api"),
    ),
]
SloTtftOption = Annotated[
    float | None,
    typer.Option(
        "--slo-ttft-p95-ms",
        min=0.001,
        help="TTFT P95 limit (streamed runs; also goodput's TTFT target).",
        show_default=env_default(ProberSettings, "slo_ttft_p95_ms"),
    ),
]
SloItlOption = Annotated[
    float | None,
    typer.Option(
        "--slo-itl-p95-ms",
        min=0.001,
        help="ITL P95 limit (streamed runs).",
        show_default=env_default(ProberSettings, "slo_itl_p95_ms"),
    ),
]
SloTpotOption = Annotated[
    float | None,
    typer.Option(
        "--slo-tpot-p95-ms",
        min=0.001,
        help="TPOT P95 limit (streamed runs; also goodput's TPOT target).",
        show_default=env_default(ProberSettings, "slo_tpot_p95_ms"),
    ),
]


def _api(flag: str | None, settings: ProberSettings) -> str:
    if flag is None:
        return settings.api
    if flag not in ("runsync", "stream", "openai"):
        raise _usage(f"--api must be runsync, stream or openai, got {flag!r}")
    return flag


def _chat_slo(
    settings: ProberSettings, ttft: float | None, itl: float | None, tpot: float | None
) -> ProberSettings:
    """The settings with this run's TTFT, ITL and TPOT limits where flags gave them."""
    flags = {"slo_ttft_p95_ms": ttft, "slo_itl_p95_ms": itl, "slo_tpot_p95_ms": tpot}
    update = {
        name: _finite(value, "--" + name.replace("_", "-"))
        for name, value in flags.items()
        if value is not None
    }
    return settings.model_copy(update=update) if update else settings


TargetOption = Annotated[
    str | None,
    typer.Option(
        metavar="<hosted|twin>",
        help="hosted (RUNPOD_ENDPOINT_ID with RUNPOD_API_KEY) or twin (a local twin for the run).",
        show_default="hosted when RUNPOD_ENDPOINT_ID is set, else twin",
    ),
]


def loadtest(
    concurrency: Annotated[
        str | None,
        typer.Option(
            metavar="<levels>",
            help="Concurrency, or levels for a sweep: 1,2,3,4. Open loop: the cap on requests "
            "in flight.",
            show_default="1; open loop: no cap",
        ),
    ] = None,
    runs: Annotated[
        int | None,
        typer.Option(
            min=1, help="Measured requests per level.", show_default="30, or none with --duration"
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            metavar="<duration>",
            help="Length of each level: 90, 90s, 5m, 1h.",
            show_default="none: --runs requests",
        ),
    ] = None,
    arrival: Annotated[
        str,
        typer.Option(
            metavar="<closed|constant|poisson>",
            help="closed (fixed concurrency), constant or poisson (open loop).",
        ),
    ] = "closed",
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Open loop: requests per second (needed by constant and poisson).",
            show_default="none",
        ),
    ] = None,
    warmup: WarmupOption = None,
    timeout: TimeoutOption = None,
    prompts: PromptsOption = None,
    results_dir: ResultsDirOption = None,
    run_id: RunIdOption = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    api: ApiOption = None,
    slo_ttft_p95_ms: SloTtftOption = None,
    slo_itl_p95_ms: SloItlOption = None,
    slo_tpot_p95_ms: SloTpotOption = None,
    recommend_by: Annotated[
        str,
        typer.Option(
            metavar="<slo|goodput>",
            help="A sweep recommends the highest level meeting the SLO, or the level with the "
            "highest goodput.",
        ),
    ] = "slo",
) -> None:
    """Load test: the SLO table per level; several levels make a sweep with a recommendation.

    Exits 1 when the SLO fails (a sweep: when no level can be recommended). Set
    OTEL_TRACES_EXPORTER to emit one runpod.job span per request.
    """
    settings, common = _settings()
    settings = _chat_slo(settings, slo_ttft_p95_ms, slo_itl_p95_ms, slo_tpot_p95_ms)
    if recommend_by not in ("slo", "goodput"):
        raise _usage(f"--recommend-by must be slo or goodput, got {recommend_by!r}")
    kind_of_target = _target_kind(target, common)
    if arrival not in ("closed", "constant", "poisson"):
        raise _usage(f"--arrival must be closed, constant or poisson, got {arrival!r}")
    levels = (
        _levels(concurrency) if concurrency is not None else ((1,) if arrival == "closed" else (0,))
    )
    seconds = _seconds(duration, "--duration")
    if runs is None and seconds is None:
        runs = 30
    kind = "sweep" if len(levels) > 1 else "load"
    spec = _spec(
        kind=kind,
        run_id=new_run_id(kind) if run_id is None else run_id,
        concurrency=levels,
        runs=runs,
        duration_s=seconds,
        arrival=arrival,
        rate=None if rate is None else _finite(rate, "--rate"),
        warmup=settings.warmup if warmup is None else warmup,
        timeout_s=settings.timeout_s if timeout is None else _finite(timeout, "--timeout"),
        prompts=prompts,
        api=_api(api, settings),
        recommend_by=recommend_by,
    )
    options = _RunOptions(kind_of_target, _results_dir(results_dir, settings), as_json)
    _run(spec, settings, common, options)


def soak(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Concurrency.", show_default=env_default(ProberSettings, "soak_concurrency")
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            metavar="<duration>",
            help="Length: 30m, 1h, 1800 (seconds).",
            show_default=f"{env_default(ProberSettings, 'soak_duration_s')} s, or none with --runs",
        ),
    ] = None,
    runs: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many requests.", show_default="none"),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            metavar="<duration>",
            help="Window length: 60s, 5m.",
            show_default=f"{env_default(ProberSettings, 'soak_window_s')} s",
        ),
    ] = None,
    warmup: WarmupOption = None,
    timeout: TimeoutOption = None,
    prompts: PromptsOption = None,
    results_dir: ResultsDirOption = None,
    run_id: RunIdOption = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    api: ApiOption = None,
    slo_ttft_p95_ms: SloTtftOption = None,
    slo_itl_p95_ms: SloItlOption = None,
    slo_tpot_p95_ms: SloTpotOption = None,
) -> None:
    """Soak: fixed concurrency for a while; per-window P50/P95, trend tests, plot, report."""
    settings, common = _settings()
    settings = _chat_slo(settings, slo_ttft_p95_ms, slo_itl_p95_ms, slo_tpot_p95_ms)
    kind_of_target = _target_kind(target, common)
    seconds = _seconds(duration, "--duration")
    if seconds is None and runs is None:
        seconds = settings.soak_duration_s
    spec = _spec(
        kind="soak",
        run_id=new_run_id("soak") if run_id is None else run_id,
        concurrency=(concurrency or settings.soak_concurrency,),
        runs=runs,
        duration_s=seconds,
        window_s=_seconds(window, "--window") or settings.soak_window_s,
        warmup=settings.warmup if warmup is None else warmup,
        timeout_s=settings.timeout_s if timeout is None else _finite(timeout, "--timeout"),
        prompts=prompts,
        api=_api(api, settings),
    )
    options = _RunOptions(kind_of_target, _results_dir(results_dir, settings), as_json)
    _run(spec, settings, common, options)


def report(
    run_id: Annotated[str, typer.Argument(help="The run's folder name under the results dir.")],
    results_dir: ResultsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a run's summary; rebuilt from requests.csv when the run died before writing one.

    Exits 2, naming the file and field, when summary.json, requests.csv, spec.json or
    target.json does not validate: no verdict is shown that was not validated. A summary
    whose verdict its own numbers contradict is refused, not recomputed (see RunSummary).
    """
    settings, _ = _settings()
    try:
        folder = run_dir(results_dir or settings.results_dir, run_id)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    try:
        if (folder / SUMMARY_FILE).is_file():
            summary = read_summary(folder / SUMMARY_FILE)
        elif any(folder.glob("requests*.csv")):
            summary = _rebuild(folder, settings)
        else:
            raise _usage(f"no run {run_id!r} in {folder.parent} (no summary.json or requests.csv)")
    except (SummaryError, ResultsError) as exc:
        raise _usage(str(exc)) from None
    except OSError as exc:
        # Unreadable, a folder where a file belongs: say which and why, never a traceback.
        raise _usage(f"run {run_id!r} cannot be read: {exc.filename}: {exc.strerror}") from None
    _finish(summary, as_json=as_json)


def _rebuild(folder: Path, settings: ProberSettings) -> RunSummary:
    records = read_records(folder)
    spec = read_spec(folder)
    target = read_target(folder)
    if spec.run_id != folder.name:
        raise ResultsError(f"{folder / SPEC_FILE} names run {spec.run_id!r}, not {folder.name!r}")
    window = (spec.window_s or settings.soak_window_s) if spec.kind == "soak" else None
    origin = min((r.intended for r in records), default=None) if window else None
    levels: dict[int, RunStats] = {}
    targets = targets_of(slo_of(settings))
    for record in records:
        if record.concurrency not in levels:
            levels[record.concurrency] = RunStats(window_s=window, origin=origin, targets=targets)
        levels[record.concurrency].add(record)
    try:
        return summarize(spec, levels, settings, target=target, interrupted=True)
    except ValidationError as exc:
        # Rows that parse one by one but do not make a summary of this spec's run.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'summary'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ResultsError(
            f"{folder}: the rows do not make a {spec.kind} run: {problems}"
        ) from None
    except ValueError as exc:
        raise ResultsError(f"{folder}: the rows do not make a {spec.kind} run: {exc}") from None
