"""``podpulse cost`` and ``podpulse advise``.

Both read podpulse.toml when there is one (GPU, workers, idle timeout, ``[prices]``); flags
override it. Run data comes from ``--from RUN_ID`` (repeatable) or, without it, the newest
run in the results folder. Exit codes: 0 with an answer, 1 when ``advise`` finds no
configuration that meets the SLO, 2 for bad flags, settings, podpulse.toml or run data (one
line on stderr, no traceback).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from podpulse.common.runpod import EndpointConfig
from podpulse.common.settings import describe_settings_error
from podpulse.common.summary import Slo, SummaryError, read_summary

from .._deployment_file import (
    DEFAULT_FILE,
    DeploymentFile,
    DeploymentFileError,
    read_deployment_file,
)
from ..settings import CostSettings
from ._advise import MIN_RATE_RPS, Advice, Judged, candidates
from ._advise import advise as run_advisor
from ._estimate import CostError, CostReport, estimate_cost, read_run, read_traffic
from ._prices import GpuPrice, PriceError, PriceTable
from ._scaler_model import Workload

__all__ = ["advise", "cost"]

_EXIT_NO_ADVICE, _EXIT_USAGE = 1, 2
_SHOWN_EACH_SIDE = 5


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain columns (a pipe or a narrow terminal must not wrap a row); numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        shown = [
            c.rjust(w) if (c[:1].isdigit() or c[:1] in "$-") and " " not in c else c.ljust(w)
            for c, w in zip(cells, widths, strict=True)
        ]
        return "  ".join(shown).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _usage(message: str) -> typer.Exit:
    # One line, control characters escaped: a run id or file name may carry anything.
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)
    Console(stderr=True).print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(_EXIT_USAGE)


def _settings() -> CostSettings:
    try:
        return CostSettings()
    except ValidationError as exc:
        raise _usage(
            f"invalid settings in the environment: {describe_settings_error(exc)}"
        ) from None


def _deployment(path: Path | None) -> DeploymentFile | None:
    """The given file (which must exist), else ./podpulse.toml when there is one."""
    if path is None and not DEFAULT_FILE.exists():
        return None
    try:
        return read_deployment_file(path or DEFAULT_FILE)
    except DeploymentFileError as exc:
        raise _usage(str(exc)) from None


@dataclass(frozen=True)
class _Pricing:
    gpu: str
    price: GpuPrice
    always_on_per_hour: float


def _pricing(
    deployment: DeploymentFile | None, gpu: str | None, per_hour: float | None
) -> _Pricing:
    table = PriceTable.with_overrides(deployment.prices if deployment else {})
    name = gpu if gpu is not None else (deployment.endpoint.gpu if deployment else None)
    if name is None:
        raise _usage("no podpulse.toml here: pass --gpu NAME (e.g. '4090 PRO') or --file")
    if per_hour is not None and not (math.isfinite(per_hour) and 0 < per_hour <= 1000):
        raise _usage(f"--price-per-hour takes USD per worker-hour in (0, 1000], got {per_hour}")
    try:
        price = table.lookup(name)
    except PriceError as exc:
        raise _usage(str(exc)) from None
    return _Pricing(name, price, per_hour if per_hour is not None else price.active_per_hour)


def _newest_run(results_dir: Path) -> str | None:
    try:
        found = [(p.stat().st_mtime, p.parent.name) for p in results_dir.glob("*/requests*.csv")]
    except OSError:
        return None
    return max(found)[1] if found else None


def _runs(given: list[str] | None, results_dir: Path) -> list[str]:
    if given:
        return given
    newest = _newest_run(results_dir)
    if newest is None:
        return []
    Console(stderr=True).print(f"using the newest run: {escape(newest)}", highlight=False)
    return [newest]


def _positive(value: float | None, flag: str, high: float) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 <= value <= high):
        raise _usage(f"{flag} takes a number in [0, {high:g}], got {value}")
    return value


FileOption = Annotated[
    Path | None, typer.Option("--file", help="The deployment file (default ./podpulse.toml).")
]
FromOption = Annotated[
    list[str] | None,
    typer.Option("--from", help="A run whose requests to use (repeatable; default: the newest)."),
]
GpuOption = Annotated[
    str | None, typer.Option(help="GPU or RunPod pool name (default: podpulse.toml's gpu).")
]
PriceOption = Annotated[
    float | None, typer.Option(help="USD per always-on worker-hour (default: the price table).")
]
ColdOption = Annotated[
    float | None, typer.Option("--cold-start", help="Seconds a new worker takes to start.")
]
ResultsOption = Annotated[
    Path | None, typer.Option(help="Where runs are read (TAGGER_COST_RESULTS_DIR).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def cost(
    workers_min: Annotated[
        int | None, typer.Option(min=0, max=1000, help="Always-on workers (podpulse.toml's).")
    ] = None,
    price_per_hour: PriceOption = None,
    gpu: GpuOption = None,
    from_runs: FromOption = None,
    idle_timeout: Annotated[
        int | None, typer.Option(min=1, max=3600, help="Flex idle timeout, seconds.")
    ] = None,
    cold_start: ColdOption = None,
    file: FileOption = None,
    results_dir: ResultsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Monthly cost of always-on workers and of flex workers for the observed traffic."""
    settings = _settings()
    deployment = _deployment(file)
    pricing = _pricing(deployment, gpu, price_per_hour)
    workers = deployment.endpoint.workers if deployment else None
    minimum = workers_min if workers_min is not None else (workers.min if workers else None)
    if minimum is None:
        raise _usage("no podpulse.toml here: pass --workers-min N")
    idle = idle_timeout or (workers.idle_timeout_s if workers else 180)
    folder = results_dir or settings.cost_results_dir
    runs = _runs(from_runs, folder)
    try:
        traffic = read_traffic(folder, runs) if runs else None
    except CostError as exc:
        raise _usage(str(exc)) from None
    report = estimate_cost(
        gpu=pricing.gpu,
        price=pricing.price,
        always_on_per_hour=pricing.always_on_per_hour,
        workers_min=minimum,
        workers_max=max(minimum, workers.max if workers else 1000),
        idle_timeout_s=idle,
        cold_start_s=_positive(cold_start, "--cold-start", 3600) or settings.cost_cold_start_s,
        traffic=traffic,
    )
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    _show_cost(report)


def _show_cost(report: CostReport) -> None:
    typer.echo(
        f"GPU {report.gpu} (pool {report.pool}): always-on "
        f"${report.always_on_per_hour:.4f}/h a worker, flex ${report.flex_per_s:.5f}/s "
        f"(${report.flex_per_s * 3600:.3f}/h); a month is 720 h"
    )
    if report.window_s is None:
        typer.echo("no run data: pass --from RUN_ID to price flex workers for real traffic")
    else:
        typer.echo(
            f"traffic: {report.requests} jobs from {', '.join(report.runs)}, "
            f"{report.busy_s:,.1f} s busy in a {report.window_s:,.1f} s window, "
            f"replayed as if every stretch of the month looked like it"
        )
    rows = []
    for option in report.options:
        risk = (
            "-"
            if option.cold_start_share_pct is None
            else f"{option.cold_start_share_pct:.2f}% wait up to {option.cold_start_s:g} s"
        )
        rows.append(
            [
                option.name,
                str(option.workers_min),
                f"${option.always_on_usd:,.2f}",
                "-" if option.flex_usd is None else f"${option.flex_usd:,.2f}",
                "-" if option.flex_worker_hours is None else f"{option.flex_worker_hours:,.1f}",
                f"${option.monthly_usd:,.2f}",
                "-"
                if option.cold_starts_per_month is None
                else f"{option.cold_starts_per_month:,.0f}",
                risk,
            ]
        )
    headers = ["option", "workersMin", "always-on/mo", "flex/mo", "flex h/mo", "total/mo",
               "cold starts/mo", "cold-start risk"]  # fmt: skip
    typer.echo(_table(headers, rows))


def advise(
    rate: Annotated[float, typer.Option(help="Requests per second to plan for.")],
    from_run: Annotated[
        str | None, typer.Option("--from", help="The run whose execution times to model.")
    ] = None,
    gpu: GpuOption = None,
    price_per_hour: PriceOption = None,
    cold_start: ColdOption = None,
    job_loop: Annotated[
        str, typer.Option(help="The workers' job loop: fast (podpulse's) or sdk (stock runpod).")
    ] = "fast",
    max_workers: Annotated[
        int | None, typer.Option(min=1, max=20, help="Largest workersMax to try.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every candidate.")] = False,
    file: FileOption = None,
    results_dir: ResultsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recommend workersMin/workersMax/scaler meeting the SLO at --rate for the least money."""
    settings = _settings()
    # The floor: below one request in the month the advice prices, there is nothing to plan
    # for (and the simulated arrivals, thousands of months apart, would lose their precision).
    if not (math.isfinite(rate) and MIN_RATE_RPS <= rate <= 1000):
        raise _usage(
            f"--rate takes requests per second from {MIN_RATE_RPS:.8f} (one a month) to 1000, "
            f"got {rate}"
        )
    if job_loop not in ("fast", "sdk"):
        raise _usage(f"--job-loop must be fast or sdk, got {job_loop[:40]!r}")
    loop: Literal["fast", "sdk"] = "fast" if job_loop == "fast" else "sdk"
    deployment = _deployment(file)
    pricing = _pricing(deployment, gpu, price_per_hour)
    folder = results_dir or settings.cost_results_dir
    runs = _runs([from_run] if from_run else None, folder)
    if not runs:
        raise _usage(f"no run in {folder} to model: pass --from RUN_ID (a load test's run)")
    exec_ms, overhead_ms, slo = _measured(folder, runs[0])
    workload = Workload.draw(
        rate_rps=rate,
        requests=settings.advise_requests,
        exec_ms=exec_ms,
        overhead_ms=overhead_ms,
        seed=settings.advise_seed,
    )
    current = deployment.endpoint.config() if deployment else None
    idles = {5, 60, 180} | ({current.idle_timeout_s} if current else set())
    price = pricing.price
    if price_per_hour is not None:
        price = GpuPrice(price.pool, price.memory_gb, price.flex_per_s, price_per_hour / 3600)
    result = run_advisor(
        candidates(max_workers or settings.advise_max_workers, idles, [current] if current else []),
        workload,
        slo=slo,
        price=price,
        cold_start_s=_positive(cold_start, "--cold-start", 3600) or settings.cost_cold_start_s,
        job_loop=loop,
        current=current,
    )
    if as_json:
        typer.echo(json.dumps(_advice_json(result, runs[0], rate, len(exec_ms)), indent=2))
    else:
        _show_advice(result, runs[0], rate, len(exec_ms), show_all=show_all)
    if result.chosen is None:
        raise typer.Exit(_EXIT_NO_ADVICE)


def _measured(folder: Path, run_id: str) -> tuple[list[float], list[float], Slo]:
    """The run's execution times and overheads (successful requests) and its SLO."""
    try:
        records = read_run(folder, run_id)
    except CostError as exc:
        raise _usage(str(exc)) from None
    ok = [r for r in records if r.ok and r.exec_ms is not None]
    if not ok:
        raise _usage(f"run {run_id!r} has no successful request with an execution time")
    overheads = [o for r in ok if (o := r.overhead_ms) is not None and o >= 0]
    slo = Slo()
    summary = folder / run_id / "summary.json"
    if summary.exists():
        try:
            slo = read_summary(summary).level.slo.thresholds
        except (SummaryError, OSError) as exc:
            raise _usage(str(exc)) from None
    return [r.exec_ms for r in ok if r.exec_ms is not None], overheads, slo


def _label(config: EndpointConfig) -> str:
    return (
        f"{config.workers_min}/{config.workers_max} {config.scaler_type.value} "
        f"{config.scaler_value:g} idle {config.idle_timeout_s}s"
    )


def _shown(advice: Advice, show_all: bool) -> list[Judged]:
    if show_all or advice.chosen is None:
        return list(advice.judged) if show_all else list(advice.judged[: 2 * _SHOWN_EACH_SIDE])
    at = advice.judged.index(advice.chosen)
    rows = list(advice.judged[max(0, at - _SHOWN_EACH_SIDE) : at + _SHOWN_EACH_SIDE + 1])
    if advice.current is not None and advice.current not in rows:
        rows.append(advice.current)
    return rows


def _show_advice(advice: Advice, run_id: str, rate: float, samples: int, *, show_all: bool) -> None:
    typer.echo(
        f"{len(advice.judged)} configurations at {rate:g} req/s, execution times from run "
        f"{run_id} ({samples} requests); predicted queue (delayTime) and total in ms"
    )
    rows = []
    for judged in _shown(advice, show_all):
        p = judged.prediction
        mark = "*" if judged is advice.chosen else ("now" if judged is advice.current else "")
        rows.append(
            [
                mark,
                _label(judged.config),
                f"{p.delay_p50_ms:,.0f}",
                f"{p.delay_p95_ms:,.0f}",
                f"{p.total_p50_ms:,.0f}",
                f"{p.total_p95_ms:,.0f}",
                str(p.cold_starts),
                f"${judged.monthly_usd:,.2f}",
                advice.why_not(judged),
            ]
        )
    headers = ["", "min/max scaler idle", "queue P50", "queue P95", "total P50", "total P95",
               "cold starts", "cost/mo", "why (not)"]  # fmt: skip
    typer.echo(_table(headers, rows))
    if advice.chosen is None:
        typer.echo("no configuration up to the largest workersMax meets the SLO at this rate")
    else:
        typer.echo(f"recommended: {_label(advice.chosen.config)}")


def _advice_json(advice: Advice, run_id: str, rate: float, samples: int) -> dict[str, Any]:
    def one(judged: Judged) -> dict[str, Any]:
        p = judged.prediction
        return {
            "config": judged.config.model_dump(mode="json"),
            "queue_p50_ms": p.delay_p50_ms,
            "queue_p95_ms": p.delay_p95_ms,
            "exec_p50_ms": p.exec_p50_ms,
            "exec_p95_ms": p.exec_p95_ms,
            "total_p50_ms": p.total_p50_ms,
            "total_p95_ms": p.total_p95_ms,
            "cold_starts": p.cold_starts,
            "monthly_usd": judged.monthly_usd,
            "verdict": advice.why_not(judged),
        }

    return {
        "run_id": run_id,
        "rate_rps": rate,
        "samples": samples,
        "chosen": None if advice.chosen is None else one(advice.chosen),
        "current": None if advice.current is None else one(advice.current),
        "candidates": [one(j) for j in advice.judged],
    }
