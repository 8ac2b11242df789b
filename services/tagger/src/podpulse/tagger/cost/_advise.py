"""``podpulse advise``: the cheapest endpoint configuration that meets the SLO at a rate.

Every candidate (workersMin, workersMax, scaler, idle timeout) is run through the one model
``cost`` prices with too (``_month``: the scaler model and RunPod's billing) on the same
draws from a measured run's execution times; each prediction is judged on the SLO's latency
lines (exec and total P50/P95: the model does not invent failures, so the success line is
the run's own) and priced by that model. The recommendation is the cheapest passing
candidate (fewer workers, then lower total P95, on a tie); each alternative shows why it was
not chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.summary import Slo

from ._month import MONTH_S, Month, estimate_month
from ._prices import GpuPrice
from ._scaler_model import JobLoop, Prediction, Workload

__all__ = ["MIN_RATE_RPS", "Advice", "Judged", "advise", "candidates"]

# One request in the month the advice prices: below it there is no traffic to plan for.
MIN_RATE_RPS = 1 / MONTH_S

# The scaler settings tried: QUEUE_DELAY from RunPod's floor (0.5 s) up to 4 s, and
# REQUEST_COUNT of one or two requests a worker (more only helps batching workers).
_SCALERS: tuple[tuple[ScalerType, float], ...] = (
    (ScalerType.QUEUE_DELAY, 0.5),
    (ScalerType.QUEUE_DELAY, 1),
    (ScalerType.QUEUE_DELAY, 2),
    (ScalerType.QUEUE_DELAY, 4),
    (ScalerType.REQUEST_COUNT, 1),
    (ScalerType.REQUEST_COUNT, 2),
)


@dataclass(frozen=True)
class Judged:
    """One candidate's month (prediction and bill) and SLO problems (empty: it passes)."""

    month: Month
    problems: tuple[str, ...]

    @property
    def prediction(self) -> Prediction:
        """What the scaler model predicts for it."""
        return self.month.prediction

    @property
    def monthly_usd(self) -> float:
        """Its monthly bill, to the cent."""
        return self.month.monthly_usd

    @property
    def config(self) -> EndpointConfig:
        """The candidate configuration."""
        return self.prediction.config

    @property
    def passes(self) -> bool:
        """True when every latency line of the SLO holds."""
        return not self.problems


@dataclass(frozen=True)
class Advice:
    """The recommendation (None: no candidate meets the SLO) and every candidate judged,
    cheapest first; ``current`` is podpulse.toml's configuration, when one was given."""

    chosen: Judged | None
    judged: tuple[Judged, ...]
    current: Judged | None

    def why_not(self, candidate: Judged) -> str:
        """One line: why ``candidate`` was not recommended."""
        if candidate.problems:
            return "; ".join(candidate.problems)
        if self.chosen is None or candidate.config == self.chosen.config:
            return "chosen"
        more = candidate.monthly_usd - self.chosen.monthly_usd
        if more > 0.005:
            return f"meets the SLO but costs ${more:,.2f} a month more"
        return "meets the SLO at the same cost, with more workers or a higher total P95"


def candidates(
    max_workers: int, idle_timeouts: Iterable[int], extra: Iterable[EndpointConfig] = ()
) -> list[EndpointConfig]:
    """Every configuration up to ``max_workers``: each scaler and idle timeout where the
    endpoint can scale (min < max), one fixed-size endpoint per size, plus ``extra``."""
    found: dict[EndpointConfig, None] = {}
    idles = sorted(set(idle_timeouts))
    for workers_max in range(1, max_workers + 1):
        for workers_min in range(workers_max + 1):
            if workers_min == workers_max:
                # Nothing scales: the scaler and idle timeout change neither latency nor cost.
                scalers: Sequence[tuple[ScalerType, float]] = _SCALERS[1:2]
                timeouts = idles[-1:]
            else:
                scalers, timeouts = _SCALERS, idles
            for scaler_type, value in scalers:
                for idle in timeouts:
                    config = EndpointConfig(
                        workers_min=workers_min,
                        workers_max=workers_max,
                        idle_timeout_s=idle,
                        scaler_type=scaler_type,
                        scaler_value=value,
                    )
                    found[config] = None
    for config in extra:
        found[config] = None
    return list(found)


def advise(
    configs: Iterable[EndpointConfig],
    workload: Workload,
    *,
    slo: Slo,
    price: GpuPrice,
    cold_start_s: float,
    job_loop: JobLoop,
    current: EndpointConfig | None = None,
) -> Advice:
    """Judge every configuration on ``workload``; the cheapest passing one is chosen."""
    judged = [
        _judge(
            estimate_month(c, workload, price=price, cold_start_s=cold_start_s, job_loop=job_loop),
            slo,
        )
        for c in configs
    ]
    judged.sort(key=lambda j: (j.monthly_usd, j.config.workers_max, j.prediction.total_p95_ms))
    chosen = next((j for j in judged if j.passes), None)
    mine = next((j for j in judged if j.config == current), None) if current else None
    return Advice(chosen=chosen, judged=tuple(judged), current=mine)


def _judge(month: Month, slo: Slo) -> Judged:
    prediction = month.prediction
    lines = (
        ("exec P50", prediction.exec_p50_ms, slo.exec_p50_ms),
        ("exec P95", prediction.exec_p95_ms, slo.exec_p95_ms),
        ("total P50", prediction.total_p50_ms, slo.total_p50_ms),
        ("total P95", prediction.total_p95_ms, slo.total_p95_ms),
    )
    problems = tuple(
        f"{name} {value:,.0f} ms > {limit:,.0f} ms" for name, value, limit in lines if value > limit
    )
    return Judged(month=month, problems=problems)
