"""``podpulse cost`` and ``podpulse advise``.

Both read podpulse.toml when there is one (GPU, workers, idle timeout, ``[prices]``); flags
override it. Run data comes from ``--from RUN_ID`` (repeatable for ``cost``) or, without it,
the newest run in the results folder. Both price through one model (``_month``) on the same
workload (:func:`_scenario`: the run's rate unless ``--rate`` gives one), print the
assumptions behind the answer, and warn when the run is too short to support a month.

Exit codes: 0 with an answer, 1 when ``advise`` finds no configuration that meets the SLO, 2
for bad flags, settings, podpulse.toml or run data (one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from podpulse.common.cli import env_default
from podpulse.common.histogram import percentile
from podpulse.common.output import plain
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.settings import describe_settings_error

from .._deployment_file import (
    DEFAULT_FILE,
    DeploymentFile,
    DeploymentFileError,
    read_deployment_file,
)
from ..settings import CostSettings
from ._advise import MIN_RATE_RPS, Advice, Judged, candidates
from ._advise import advise as run_advisor
from ._estimate import CostError, CostReport, Measured, always_on_report, cost_report, measure
from ._month import Assumptions, estimate_month, run_warnings
from ._prices import GpuPrice, PriceError, PriceTable
from ._scaler_model import JobLoop, Workload

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
    price: GpuPrice  # --price-per-hour already in its active rate


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
    if per_hour is not None:
        price = replace(price, active_per_s=per_hour / 3600)
    return _Pricing(name, price)


def _check_rate(rate: float | None, source: str) -> None:
    # The floor: below one request in the month the model prices, there is nothing to plan
    # for (and the simulated arrivals, thousands of months apart, would lose their precision).
    if rate is not None and not (math.isfinite(rate) and MIN_RATE_RPS <= rate <= 1000):
        raise _usage(
            f"{source} takes requests per second from {MIN_RATE_RPS:.8f} (one a month) to "
            f"1000, got {rate}"
        )


def _measure(folder: Path, runs: Sequence[str]) -> Measured:
    try:
        return measure(folder, runs)
    except CostError as exc:
        raise _usage(str(exc)) from None


def _scenario(
    settings: CostSettings,
    measured: Measured,
    *,
    rate: float | None,
    pricing: _Pricing,
    cold_start_s: float,
    job_loop: JobLoop,
) -> tuple[Workload, Assumptions]:
    """The workload both commands price, and the assumptions they print with the answer."""
    named = ", ".join(measured.runs)
    rate_measured = rate is None
    if rate is None:
        rate = measured.rate_rps
        if rate is None:
            raise _usage(f"{named} sent too few requests to measure a rate: pass --rate")
        _check_rate(rate, f"the rate measured from {named}")
        source = f"measured: {measured.requests} requests over {measured.run_s:,.0f} s of {named}"
    else:
        source = "--rate"
    exec_ms = measured.exec_ms
    workload = Workload.draw(
        rate_rps=rate,
        exec_ms=exec_ms,
        overhead_ms=measured.overhead_ms,
        requests=settings.advise_requests,
        seed=settings.advise_seed,
    )
    assumptions = Assumptions(
        rate_rps=rate,
        rate_source=source,
        runs=measured.runs,
        run_requests=measured.requests,
        run_s=round(measured.run_s, 3),
        exec_p50_ms=percentile(exec_ms, 50) or 0.0,
        exec_p95_ms=percentile(exec_ms, 95) or 0.0,
        exec_samples=len(exec_ms),
        cold_start_s=cold_start_s,
        job_loop=job_loop,
        gpu=pricing.gpu,
        pool=pricing.price.pool,
        active_per_hour=pricing.price.active_per_hour,
        flex_per_s=pricing.price.flex_per_s,
        simulated_requests=settings.advise_requests,
        seed=settings.advise_seed,
        warnings=tuple(
            run_warnings(
                measured.runs,
                requests=measured.requests,
                run_s=measured.run_s,
                rate_measured=rate_measured,
                closed_loop=measured.closed_loop,
            )
        ),
    )
    return workload, assumptions


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


def _cold_start_s(given: float | None, settings: CostSettings) -> float:
    """--cold-start when given, else the setting. Not `given or default`: 0 is a value
    (workers that start at once)."""
    checked = _positive(given, "--cold-start", 3600)
    return settings.cost_cold_start_s if checked is None else checked


FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The deployment file.", show_default="./podpulse.toml if any"),
]
FromOption = Annotated[
    list[str] | None,
    typer.Option(
        "--from",
        metavar="<run id>",
        help="A run whose requests to use (repeatable).",
        show_default="the newest run",
    ),
]
GpuOption = Annotated[
    str | None,
    typer.Option(help="GPU or RunPod pool name.", show_default="podpulse.toml's gpu"),
]
PriceOption = Annotated[
    float | None,
    typer.Option(help="USD per always-on worker-hour.", show_default="the price table's"),
]
ColdOption = Annotated[
    float | None,
    typer.Option(
        "--cold-start",
        help="Seconds a new worker takes to start.",
        show_default=env_default(CostSettings, "cost_cold_start_s"),
    ),
]
ResultsOption = Annotated[
    Path | None,
    typer.Option(
        help="Where runs are read.", show_default=env_default(CostSettings, "cost_results_dir")
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only.")]
RateOption = Annotated[
    float | None,
    typer.Option(help="Requests per second to plan for.", show_default="the run's measured rate"),
]
# The command checks the choice (one line on a bad value); the metavar lists it.
JobLoopOption = Annotated[
    str,
    typer.Option(
        metavar="<fast|sdk>",
        help="The workers' job loop: fast (podpulse's) or sdk (stock runpod).",
    ),
]


def _job_loop(value: str) -> JobLoop:
    if value not in ("fast", "sdk"):
        raise _usage(f"--job-loop must be fast or sdk, got {value[:40]!r}")
    return "fast" if value == "fast" else "sdk"


def cost(
    workers_min: Annotated[
        int | None,
        typer.Option(
            min=0, max=1000, help="Always-on workers.", show_default="podpulse.toml's workers.min"
        ),
    ] = None,
    workers_max: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="Most workers.",
            show_default="podpulse.toml's workers.max, else 5 or --workers-min",
        ),
    ] = None,
    rate: RateOption = None,
    price_per_hour: PriceOption = None,
    gpu: GpuOption = None,
    from_runs: FromOption = None,
    idle_timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=3600,
            help="Flex idle timeout, seconds.",
            show_default="podpulse.toml's, else 180",
        ),
    ] = None,
    cold_start: ColdOption = None,
    job_loop: JobLoopOption = "fast",
    file: FileOption = None,
    results_dir: ResultsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Monthly cost of the configuration in force and of flex workers alone, at the run's rate."""
    settings = _settings()
    _check_rate(rate, "--rate")
    loop = _job_loop(job_loop)
    deployment = _deployment(file)
    pricing = _pricing(deployment, gpu, price_per_hour)
    config = _cost_config(deployment, workers_min, workers_max, idle_timeout)
    folder = results_dir or settings.cost_results_dir
    runs = _runs(from_runs, folder)
    if not runs:
        if rate is not None:
            raise _usage(f"no run in {folder} to draw execution times from: pass --from RUN_ID")
        report = always_on_report(pricing.gpu, pricing.price, config)
    else:
        cold_start_s = _cold_start_s(cold_start, settings)
        workload, assumptions = _scenario(
            settings,
            _measure(folder, runs),
            rate=rate,
            pricing=pricing,
            cold_start_s=cold_start_s,
            job_loop=loop,
        )
        configs = [config]
        if config.workers_min > 0:
            configs.append(config.model_copy(update={"workers_min": 0}))
        months = [
            estimate_month(
                c, workload, price=pricing.price, cold_start_s=cold_start_s, job_loop=loop
            )
            for c in configs
        ]
        report = cost_report(pricing.gpu, assumptions, months)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    _show_cost(report)


def _cost_config(
    deployment: DeploymentFile | None,
    workers_min: int | None,
    workers_max: int | None,
    idle_timeout: int | None,
) -> EndpointConfig:
    """podpulse.toml's configuration with the flags over it; without the file, QUEUE_DELAY
    1 s (the seed's) and at most 5 workers, as ``advise`` tries by default."""
    current = deployment.endpoint.config() if deployment else None
    minimum = workers_min if workers_min is not None else (current.workers_min if current else None)
    if minimum is None:
        raise _usage("no podpulse.toml here: pass --workers-min N")
    if workers_max is not None and workers_max < minimum:
        raise _usage(f"--workers-max {workers_max} is below workersMin {minimum}")
    maximum = workers_max or max(minimum, current.workers_max if current else 5)
    return EndpointConfig(
        workers_min=minimum,
        workers_max=maximum,
        idle_timeout_s=idle_timeout or (current.idle_timeout_s if current else 180),
        scaler_type=current.scaler_type if current else ScalerType.QUEUE_DELAY,
        scaler_value=current.scaler_value if current else 1,
    )


def _show_cost(report: CostReport) -> None:
    if report.assumptions is None:
        typer.echo(
            f"GPU {report.gpu} (pool {report.pool}): always-on "
            f"${report.always_on_per_hour:.4f}/h a worker; a month is 720 h"
        )
        typer.echo("no run data: pass --from RUN_ID to price flex workers for real traffic")
    else:
        for line in report.assumptions.lines():
            typer.echo(line)
    rows = []
    for option in report.options:
        risk = (
            "-"
            if option.cold_start_share_pct is None or report.assumptions is None
            else f"{option.cold_start_share_pct:.2f}% wait up to "
            f"{plain(report.assumptions.cold_start_s, digits=6)} s"
        )
        rows.append(
            [
                option.name,
                _label(option.config),
                f"${option.always_on_usd:,.2f}",
                "-" if option.flex_usd is None else f"${option.flex_usd:,.2f}",
                "-" if option.flex_worker_hours is None else f"{option.flex_worker_hours:,.1f}",
                f"${option.monthly_usd:,.2f}",
                "-"
                if option.cold_starts_per_month is None
                else f"{option.cold_starts_per_month:,.0f}",
                risk,
                "-" if option.queue_p95_ms is None else f"{option.queue_p95_ms:,.0f}",
            ]
        )
    headers = ["option", "min/max scaler idle", "always-on/mo", "flex/mo", "flex h/mo",
               "total/mo", "cold starts/mo", "cold-start risk", "queue P95 ms"]  # fmt: skip
    typer.echo(_table(headers, rows))


def advise(
    rate: RateOption = None,
    from_run: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="<run id>",
            help="The run whose execution times to model.",
            show_default="the newest run",
        ),
    ] = None,
    gpu: GpuOption = None,
    price_per_hour: PriceOption = None,
    cold_start: ColdOption = None,
    job_loop: JobLoopOption = "fast",
    max_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=20,
            help="Largest workersMax to try.",
            show_default=env_default(CostSettings, "advise_max_workers"),
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every candidate.")] = False,
    file: FileOption = None,
    results_dir: ResultsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recommend workersMin/workersMax/scaler meeting the SLO at --rate for the least money."""
    settings = _settings()
    _check_rate(rate, "--rate")
    loop = _job_loop(job_loop)
    deployment = _deployment(file)
    pricing = _pricing(deployment, gpu, price_per_hour)
    folder = results_dir or settings.cost_results_dir
    runs = _runs([from_run] if from_run else None, folder)
    if not runs:
        raise _usage(f"no run in {folder} to model: pass --from RUN_ID (a load test's run)")
    measured = _measure(folder, runs[:1])
    cold_start_s = _cold_start_s(cold_start, settings)
    workload, assumptions = _scenario(
        settings, measured, rate=rate, pricing=pricing, cold_start_s=cold_start_s, job_loop=loop
    )
    current = deployment.endpoint.config() if deployment else None
    idles = {5, 60, 180} | ({current.idle_timeout_s} if current else set())
    result = run_advisor(
        candidates(max_workers or settings.advise_max_workers, idles, [current] if current else []),
        workload,
        slo=measured.slo,
        price=pricing.price,
        cold_start_s=cold_start_s,
        job_loop=loop,
        current=current,
    )
    if as_json:
        typer.echo(json.dumps(_advice_json(result, assumptions), indent=2))
    else:
        _show_advice(result, assumptions, show_all=show_all)
    if result.chosen is None:
        raise typer.Exit(_EXIT_NO_ADVICE)


def _label(config: EndpointConfig) -> str:
    return (
        f"{config.workers_min}/{config.workers_max} {config.scaler_type.value} "
        f"{plain(config.scaler_value, digits=6)} idle {config.idle_timeout_s}s"
    )


def _shown(advice: Advice, show_all: bool) -> list[Judged]:
    if show_all or advice.chosen is None:
        return list(advice.judged) if show_all else list(advice.judged[: 2 * _SHOWN_EACH_SIDE])
    at = advice.judged.index(advice.chosen)
    rows = list(advice.judged[max(0, at - _SHOWN_EACH_SIDE) : at + _SHOWN_EACH_SIDE + 1])
    if advice.current is not None and advice.current not in rows:
        rows.append(advice.current)
    return rows


def _show_advice(advice: Advice, assumptions: Assumptions, *, show_all: bool) -> None:
    typer.echo(
        f"{len(advice.judged)} configurations at {plain(assumptions.rate_rps, digits=4)} req/s; "
        "predicted "
        "queue (delayTime) and total in ms"
    )
    for line in assumptions.lines():
        typer.echo(line)
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
                f"{judged.month.cold_starts:,.0f}",
                f"${judged.monthly_usd:,.2f}",
                advice.why_not(judged),
            ]
        )
    headers = ["", "min/max scaler idle", "queue P50", "queue P95", "total P50", "total P95",
               "cold starts/mo", "cost/mo", "why (not)"]  # fmt: skip
    typer.echo(_table(headers, rows))
    if advice.chosen is None:
        typer.echo("no configuration up to the largest workersMax meets the SLO at this rate")
    else:
        typer.echo(f"recommended: {_label(advice.chosen.config)}")


def _advice_json(advice: Advice, assumptions: Assumptions) -> dict[str, Any]:
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
            "cold_starts_per_month": round(judged.month.cold_starts, 1),
            "cold_start_share_pct": round(judged.month.cold_start_wait_pct, 3),
            "monthly_usd": judged.monthly_usd,
            "verdict": advice.why_not(judged),
        }

    return {
        "run_id": assumptions.runs[0],
        "rate_rps": assumptions.rate_rps,
        "samples": assumptions.exec_samples,
        "assumptions": assumptions.model_dump(mode="json"),
        "chosen": None if advice.chosen is None else one(advice.chosen),
        "current": None if advice.current is None else one(advice.current),
        "candidates": [one(j) for j in advice.judged],
    }
