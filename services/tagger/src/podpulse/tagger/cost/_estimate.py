"""What an endpoint costs a month: a run's measurements, and ``podpulse cost``'s answer.

:func:`measure` reads what a run supplies to the model: its rate (requests over the time they
were sent in), its execution times and client overheads, and whether it was a closed loop.
:func:`estimate_cost` prices the configuration in force and the same one with no always-on
worker (flex) through the one model (``_month``) that ``advise`` uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from podpulse.common.request_records import RequestRecord, ResultsError, read_records
from podpulse.common.runpod import EndpointConfig
from podpulse.common.summary import Slo, SummaryError, check_run_id, read_summary

from ._month import MONTH_S, Assumptions, Month
from ._prices import GpuPrice

__all__ = [
    "CostError",
    "CostOption",
    "CostReport",
    "Measured",
    "always_on_report",
    "cost_report",
    "measure",
    "read_run",
]


class CostError(ValueError):
    """Run data that cannot be priced; the message names the run and what is wrong."""


def read_run(results_dir: Path, run_id: str) -> list[RequestRecord]:
    """The rows of ``results_dir/<run_id>/requests*.csv``; CostError naming the run whose
    folder or rows are missing or damaged."""
    try:
        folder = results_dir / check_run_id(run_id)
    except ValueError as exc:
        raise CostError(f"--from {run_id[:80]!r}: {exc}") from None
    if not folder.is_dir():
        raise CostError(f"no run {run_id!r} in {results_dir}")
    try:
        return read_records(folder)
    except ResultsError as exc:
        raise CostError(str(exc)) from None
    except OSError as exc:
        raise CostError(f"{folder}: cannot be read ({exc.strerror})") from None


@dataclass(frozen=True)
class Measured:
    """What some runs supply to the model."""

    runs: tuple[str, ...]
    requests: int  # every request sent, failed ones too: they were traffic
    run_s: float  # first to last request sent, summed over the runs
    gaps: int  # intervals between consecutive sends, summed over the runs
    exec_ms: tuple[float, ...]  # successful requests
    overhead_ms: tuple[float, ...]
    slo: Slo  # the first run's (the default SLO without a summary.json)
    closed_loop: int | None  # concurrency, when every run was a closed loop

    @property
    def rate_rps(self) -> float | None:
        """Requests a second while the runs sent (None: under two requests in each)."""
        return self.gaps / self.run_s if self.gaps and self.run_s > 0 else None


def measure(results_dir: Path, run_ids: Sequence[str]) -> Measured:
    """Read each run (see :func:`read_run`) and its summary.json when it has one; CostError
    for a run with no successful request to take execution times from."""
    requests = gaps = 0
    run_s = 0.0
    exec_ms: list[float] = []
    overhead_ms: list[float] = []
    slos: list[Slo] = []
    loops: list[int | None] = []
    for run_id in run_ids:
        records = read_run(results_dir, run_id)
        ok = [r for r in records if r.ok and r.exec_ms is not None]
        if not ok:
            raise CostError(f"run {run_id!r} has no successful request with an execution time")
        exec_ms.extend(r.exec_ms for r in ok if r.exec_ms is not None)
        overhead_ms.extend(o for r in ok if (o := r.overhead_ms) is not None and o >= 0)
        sent = [r.sent for r in records]
        requests += len(records)
        gaps += len(records) - 1
        run_s += max(sent) - min(sent)
        summary = results_dir / run_id / "summary.json"
        if summary.exists():
            try:
                read = read_summary(summary)
            except (SummaryError, OSError) as exc:
                raise CostError(str(exc)) from None
            slos.append(read.level.slo.thresholds)
            closed = read.spec.arrival == "closed"
            loops.append(read.level.concurrency if closed else None)
        else:
            loops.append(None)
    return Measured(
        runs=tuple(run_ids),
        requests=requests,
        run_s=run_s,
        gaps=gaps,
        exec_ms=tuple(exec_ms),
        overhead_ms=tuple(overhead_ms),
        slo=slos[0] if slos else Slo(),
        closed_loop=loops[0] if loops and all(loop == loops[0] for loop in loops) else None,
    )


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CostOption(_Out):
    """One way to run the endpoint and what it costs a month."""

    name: str = Field(description="'current' (podpulse.toml's or the flags') or 'flex'.")
    config: EndpointConfig
    always_on_usd: float = Field(description="workers_min x the always-on rate x 720 h.")
    flex_usd: float | None = Field(
        description="Every other worker-second at the flex rate; None: no run to model."
    )
    monthly_usd: float
    flex_worker_hours: float | None = Field(description="Billed flex hours a month.")
    cold_starts_per_month: float | None
    cold_start_share_pct: float | None = Field(
        description="Share of requests that waited for a worker to start."
    )
    queue_p95_ms: float | None = Field(description="Predicted delayTime P95.")


class CostReport(_Out):
    """``podpulse cost``'s answer: what it assumed, and each option."""

    gpu: str
    pool: str
    always_on_per_hour: float = Field(description="USD per always-on worker-hour.")
    assumptions: Assumptions | None = Field(description="None: no run to model traffic from.")
    options: tuple[CostOption, ...]


def _option(name: str, month: Month) -> CostOption:
    """One priced configuration as ``cost`` reports it."""
    return CostOption(
        name=name,
        config=month.config,
        always_on_usd=round(month.always_on_usd, 2),
        flex_usd=round(month.flex_usd, 2),
        monthly_usd=month.monthly_usd,
        flex_worker_hours=round(month.flex_worker_hours, 1),
        cold_starts_per_month=round(month.cold_starts, 1),
        cold_start_share_pct=round(month.cold_start_wait_pct, 3),
        queue_p95_ms=month.prediction.delay_p95_ms,
    )


def cost_report(gpu: str, assumptions: Assumptions, months: Sequence[Month]) -> CostReport:
    """The configuration in force first, then (when it has always-on workers) flex."""
    return CostReport(
        gpu=gpu,
        pool=assumptions.pool,
        always_on_per_hour=assumptions.active_per_hour,
        assumptions=assumptions,
        options=tuple(_option(n, m) for n, m in zip(("current", "flex"), months, strict=False)),
    )


def always_on_report(gpu: str, price: GpuPrice, config: EndpointConfig) -> CostReport:
    """Without a run: the always-on workers alone, which cost the same whatever the traffic."""
    always_on = config.workers_min * price.active_per_s * MONTH_S
    option = CostOption(
        name="current",
        config=config,
        always_on_usd=round(always_on, 2),
        flex_usd=None,
        monthly_usd=round(always_on, 2),
        flex_worker_hours=None,
        cold_starts_per_month=None,
        cold_start_share_pct=None,
        queue_p95_ms=None,
    )
    return CostReport(
        gpu=gpu,
        pool=price.pool,
        always_on_per_hour=price.active_per_hour,
        assumptions=None,
        options=(option,),
    )
