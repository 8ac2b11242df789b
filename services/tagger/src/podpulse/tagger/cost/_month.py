"""The one model ``cost`` and ``advise`` both answer from: a configuration's month.

:func:`estimate_month` runs a workload (Poisson arrivals at a rate, execution times and client
overheads resampled from a measured run: ``_scaler_model.Workload``) through the scaler model
and bills what the simulated endpoint did the way RunPod bills, per second: the workersMin
workers at the active rate every second of the month, every other worker at the flex rate
from its start to its stop (its cold start, its jobs and the idle timeout it waited out). The
simulated horizon is scaled to the 720 h month, cold starts with it.

Both commands draw that workload in ``cli._scenario`` (the same size and seed), so the
same rate on the same run prices the same configuration to the cent in either.

A monthly figure assumes the rate holds all month with Poisson arrivals: no daily pattern,
no bursts beyond Poisson. :func:`run_warnings` says when the run cannot carry that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from podpulse.common.output import plain
from podpulse.common.runpod import EndpointConfig

from ._prices import HOURS_PER_MONTH, GpuPrice
from ._scaler_model import JobLoop, Prediction, Workload, simulate

__all__ = [
    "MIN_RUN_REQUESTS",
    "MIN_RUN_S",
    "MONTH_S",
    "Assumptions",
    "Month",
    "estimate_month",
    "run_warnings",
]

MONTH_S = HOURS_PER_MONTH * 3600.0

# Below these a run does not support a month's extrapolation. 100 requests: a rate counted
# from n Poisson arrivals is uncertain by about 2/sqrt(n), ±20% at 100, and an exec P95 from
# fewer rests on a handful of samples. 10 minutes: a shorter run spans only a few cold starts
# and idle timeouts, and shows nothing of whether its rate holds (a soak is 30-60 min).
MIN_RUN_REQUESTS = 100
MIN_RUN_S = 600.0


@dataclass(frozen=True)
class Month:
    """One configuration's month on a workload: its bill, cold starts and waits."""

    prediction: Prediction
    always_on_usd: float  # workersMin x the active rate x 720 h
    flex_usd: float  # every other worker-second, at the flex rate
    flex_worker_hours: float
    cold_starts: float  # a month
    cold_start_wait_pct: float  # requests still queued when a new worker's cold start ended

    @property
    def config(self) -> EndpointConfig:
        """The configuration priced."""
        return self.prediction.config

    @property
    def monthly_usd(self) -> float:
        """Always-on plus flex, to the cent (both commands show and rank by this figure)."""
        return round(self.always_on_usd + self.flex_usd, 2)


def estimate_month(
    config: EndpointConfig,
    workload: Workload,
    *,
    price: GpuPrice,
    cold_start_s: float,
    job_loop: JobLoop,
) -> Month:
    """Simulate ``config`` on ``workload`` and bill it for a month (see the module)."""
    prediction = simulate(config, workload, cold_start_s=cold_start_s, job_loop=job_loop)
    scale = MONTH_S / prediction.horizon_s if prediction.horizon_s > 0 else 0.0
    requests = len(workload.arrivals_s)
    return Month(
        prediction=prediction,
        always_on_usd=config.workers_min * MONTH_S * price.active_per_s,
        flex_usd=prediction.flex_worker_s * scale * price.flex_per_s,
        flex_worker_hours=prediction.flex_worker_s * scale / 3600,
        cold_starts=prediction.cold_starts * scale,
        cold_start_wait_pct=100.0 * prediction.cold_start_waits / requests if requests else 0.0,
    )


class Assumptions(BaseModel):
    """What drives an answer, printed with it: where the rate came from, the execution
    times, the prices and the month."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_rps: float = Field(description="Poisson arrivals a second, all month.")
    rate_source: str = Field(description="'--rate', or the run it was measured from.")
    runs: tuple[str, ...] = Field(description="The runs execution times were drawn from.")
    run_requests: int = Field(description="Requests in those runs.")
    run_s: float = Field(description="Their length: first to last request sent, summed.")
    exec_p50_ms: float
    exec_p95_ms: float
    exec_samples: int = Field(description="Successful requests the times are drawn from.")
    cold_start_s: float
    job_loop: str
    gpu: str
    pool: str
    active_per_hour: float = Field(description="USD per always-on (workersMin) worker-hour.")
    flex_per_s: float = Field(description="USD per flex worker-second.")
    hours_per_month: int = HOURS_PER_MONTH
    simulated_requests: int
    seed: int
    warnings: tuple[str, ...] = Field(description="Why the figures may not hold; empty: none.")

    def lines(self) -> list[str]:
        """The assumptions as a reader sees them, warnings last."""
        return [
            f"assumes: {plain(self.rate_rps, digits=4)} req/s ({self.rate_source}), Poisson, "
            "all month; "
            f"exec P50 {self.exec_p50_ms:,.0f} ms, P95 {self.exec_p95_ms:,.0f} ms "
            f"({self.exec_samples} requests of {', '.join(self.runs)}); cold start "
            f"{plain(self.cold_start_s, digits=6)} s; job loop {self.job_loop}",
            f"prices: GPU {self.gpu} (pool {self.pool}): always-on "
            f"${self.active_per_hour:.4f}/h a worker, flex ${self.flex_per_s:.5f}/s; a month "
            f"is {self.hours_per_month} h; {self.simulated_requests} requests simulated "
            f"(seed {self.seed}) and scaled to it",
            *(f"warning: {w}" for w in self.warnings),
        ]


def run_warnings(
    runs: Sequence[str],
    *,
    requests: int,
    run_s: float,
    rate_measured: bool,
    closed_loop: int | None,
) -> list[str]:
    """Why the runs cannot carry a month's extrapolation (empty: they can).

    The length counts only when the rate comes from the run: with ``--rate`` the run supplies
    execution times, and a short run with enough requests has those.
    """
    named = ", ".join(runs)
    found = []
    short = requests < MIN_RUN_REQUESTS or (rate_measured and run_s < MIN_RUN_S)
    if short:
        found.append(
            f"{named}: {requests} requests over {_duration(run_s)} is too short to extrapolate "
            f"to a month (at least {MIN_RUN_REQUESTS} requests"
            + (f" and {MIN_RUN_S / 60:g} minutes" if rate_measured else "")
            + "): treat every monthly figure as rough"
        )
    if rate_measured and closed_loop is not None:
        found.append(
            f"{named} was a closed loop at concurrency {closed_loop}: its rate is what "
            f"{closed_loop} clients sent back to back, and Poisson arrivals at that rate queue "
            "more than it did; pass --rate with the traffic you expect"
        )
    return found


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
