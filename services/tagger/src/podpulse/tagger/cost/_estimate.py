"""What an endpoint costs a month: always-on workers against flex workers, from observed traffic.

Always-on: ``workersMin`` workers billed every second of the month at the pool's active rate
(2 x $0.40/h x 720 h = $576). Flex: workers the scaler starts for the traffic, billed at the
flex rate for their cold start, their jobs and the idle timeout they wait before stopping.

The flex figure is a replay of real traffic, not an average: the jobs of the given runs
(``requests.csv``: each job ran from ``sent + delayTime`` for ``executionTime``) are handed,
in order, to a free always-on worker, else to the flex worker that frees first when that is
sooner than a cold start, else to a new flex worker, which costs a cold start first. A request
that waited for a starting worker is the cold-start risk: on hosted RunPod it waits up to that
long (30-60 s for a 22 GB model). The replayed window runs from the first job to the last
job's end plus one idle timeout, and is scaled to the month: "if every stretch of the month
looked like these runs".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from podpulse.common.request_records import RequestRecord, ResultsError, read_records
from podpulse.common.summary import check_run_id

from ._prices import HOURS_PER_MONTH, GpuPrice

__all__ = [
    "MONTH_S",
    "Billing",
    "CostError",
    "CostOption",
    "CostReport",
    "Job",
    "Traffic",
    "bill",
    "estimate_cost",
    "read_traffic",
]

MONTH_S = HOURS_PER_MONTH * 3600.0


class CostError(ValueError):
    """Run data that cannot be priced; the message names the run and what is wrong."""


@dataclass(frozen=True, slots=True)
class Job:
    """One job as a worker saw it: when it started executing and for how long."""

    start_s: float
    exec_s: float


@dataclass(frozen=True, slots=True)
class Traffic:
    """The jobs of some runs, in start order, and the runs they came from."""

    runs: tuple[str, ...]
    jobs: tuple[Job, ...]

    @classmethod
    def from_records(cls, runs: Sequence[str], records: Iterable[RequestRecord]) -> Traffic:
        """Every record that reached a worker (it has an executionTime), failed ones too:
        a failed job was billed as well."""
        jobs = [
            Job(start_s=r.sent + r.delay_ms / 1000.0, exec_s=r.exec_ms / 1000.0)
            for r in records
            if r.exec_ms is not None and r.delay_ms is not None
        ]
        jobs.sort(key=lambda job: job.start_s)
        return cls(runs=tuple(runs), jobs=tuple(jobs))

    def window_s(self, idle_timeout_s: float) -> float:
        """First job's start to the last job's end plus one idle timeout (its billed tail)."""
        if not self.jobs:
            return 0.0
        end = max(job.start_s + job.exec_s for job in self.jobs)
        return end + idle_timeout_s - self.jobs[0].start_s


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


def read_traffic(results_dir: Path, run_ids: Sequence[str]) -> Traffic:
    """The jobs of each run (see :func:`read_run`); CostError for a run with none to price."""
    records: list[RequestRecord] = []
    for run_id in run_ids:
        rows = read_run(results_dir, run_id)
        if not any(r.exec_ms is not None for r in rows):
            raise CostError(f"run {run_id!r} has no request that reached a worker to price")
        records.extend(rows)
    return Traffic.from_records(run_ids, records)


@dataclass(frozen=True, slots=True)
class Billing:
    """Worker-seconds of one replay, by what they were spent on."""

    requests: int
    flex_busy_s: float
    flex_idle_s: float  # gaps inside the idle timeout, and each worker's final timeout
    flex_cold_s: float
    cold_starts: int  # new flex workers
    cold_start_waits: int  # requests that waited for a worker to finish its cold start

    @property
    def flex_s(self) -> float:
        """Every billed flex second."""
        return self.flex_busy_s + self.flex_idle_s + self.flex_cold_s


@dataclass(slots=True)
class _Flex:
    ready_at: float  # its cold start ends
    free_at: float  # its last job ends


def bill(
    traffic: Traffic,
    *,
    warm: int,
    idle_timeout_s: float,
    cold_start_s: float,
    max_workers: int,
) -> Billing:
    """Replay ``traffic`` on ``warm`` always-on workers and flex workers (see the module).

    A job no worker is free for waits for the flex worker that frees first when that is
    sooner than a cold start (or the endpoint is at ``max_workers``); else a new flex worker
    starts for it. A job that runs on a worker still starting waited for a cold start.
    """
    warm_free = [-math.inf] * warm
    flex: list[_Flex] = []
    busy = idle = cold = 0.0
    cold_starts = waited = 0
    for job in traffic.jobs:
        busy += job.exec_s
        # Flex workers idle past their timeout stopped: their whole timeout was billed.
        for worker in [w for w in flex if w.free_at + idle_timeout_s < job.start_s]:
            idle += idle_timeout_s
            flex.remove(worker)
        free_warm = next((i for i, t in enumerate(warm_free) if t <= job.start_s), None)
        if free_warm is not None:
            warm_free[free_warm] = job.start_s + job.exec_s
            busy -= job.exec_s  # always-on seconds are billed whole, not per job
            continue
        first = min(flex, key=lambda w: w.free_at, default=None)
        room = warm + len(flex) < max_workers
        if first is not None and (first.free_at <= job.start_s + cold_start_s or not room):
            idle += max(0.0, job.start_s - first.free_at)
            waited += first.ready_at > job.start_s
            first.free_at = max(first.free_at, job.start_s) + job.exec_s
            continue
        if not room:
            # Only always-on workers, all busy, at the ceiling: the job queues for one.
            at = min(range(warm), key=lambda i: warm_free[i])
            warm_free[at] += job.exec_s
            busy -= job.exec_s
            continue
        cold_starts += 1
        waited += 1
        cold += cold_start_s
        ready = job.start_s + cold_start_s
        flex.append(_Flex(ready_at=ready, free_at=ready + job.exec_s))
    idle += idle_timeout_s * len(flex)
    return Billing(
        requests=len(traffic.jobs),
        flex_busy_s=busy,
        flex_idle_s=idle,
        flex_cold_s=cold,
        cold_starts=cold_starts,
        cold_start_waits=waited,
    )


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CostOption(_Out):
    """One way to run the endpoint and what it costs a month."""

    name: str = Field(description="'always-on' or 'flex'.")
    workers_min: int = Field(description="Always-on workers.")
    idle_timeout_s: int
    always_on_usd: float = Field(description="workers_min x the always-on rate x 720 h.")
    flex_usd: float | None = Field(
        description="Flex workers for the observed traffic; None: no traffic given."
    )
    monthly_usd: float
    flex_worker_hours: float | None = Field(description="Billed flex hours a month.")
    cold_starts_per_month: float | None
    cold_start_share_pct: float | None = Field(
        description="Share of requests that waited for a worker to start."
    )
    cold_start_s: float = Field(description="How long each of those waited (the cold start).")


class CostReport(_Out):
    """``podpulse cost``'s answer: the prices used, the traffic replayed and each option."""

    gpu: str
    pool: str
    always_on_per_hour: float = Field(description="USD per always-on worker-hour.")
    flex_per_s: float = Field(description="USD per flex worker-second.")
    runs: tuple[str, ...]
    requests: int
    window_s: float | None = Field(description="The replayed window (None: no traffic).")
    busy_s: float | None = Field(description="Sum of the observed execution times.")
    options: tuple[CostOption, ...]


def estimate_cost(
    *,
    gpu: str,
    price: GpuPrice,
    always_on_per_hour: float,
    workers_min: int,
    workers_max: int,
    idle_timeout_s: int,
    cold_start_s: float,
    traffic: Traffic | None,
) -> CostReport:
    """Always-on with ``workers_min`` workers (plus flex overflow beyond them) and flex with
    none, both for ``traffic`` when given; always-on alone without it."""
    window = traffic.window_s(idle_timeout_s) if traffic and traffic.jobs else None
    plans = [("always-on" if workers_min else "flex", workers_min)]
    if window is not None and workers_min > 0:
        plans.append(("flex", 0))
    options = []
    for name, warm in plans:
        always_on = warm * always_on_per_hour * HOURS_PER_MONTH
        flex_usd = hours = per_month = share = None
        if traffic is not None and window:
            billing = bill(
                traffic,
                warm=warm,
                idle_timeout_s=idle_timeout_s,
                cold_start_s=cold_start_s,
                max_workers=max(workers_max, warm),
            )
            scale = MONTH_S / window
            flex_usd = billing.flex_s * price.flex_per_s * scale
            hours = billing.flex_s * scale / 3600
            per_month = billing.cold_starts * scale
            share = 100.0 * billing.cold_start_waits / billing.requests
        options.append(
            CostOption(
                name=name,
                workers_min=warm,
                idle_timeout_s=idle_timeout_s,
                always_on_usd=round(always_on, 2),
                flex_usd=None if flex_usd is None else round(flex_usd, 2),
                monthly_usd=round(always_on + (flex_usd or 0.0), 2),
                flex_worker_hours=None if hours is None else round(hours, 1),
                cold_starts_per_month=None if per_month is None else round(per_month, 1),
                cold_start_share_pct=None if share is None else round(share, 3),
                cold_start_s=cold_start_s,
            )
        )
    return CostReport(
        gpu=gpu,
        pool=price.pool,
        always_on_per_hour=always_on_per_hour,
        flex_per_s=price.flex_per_s,
        runs=traffic.runs if traffic else (),
        requests=len(traffic.jobs) if traffic else 0,
        window_s=None if window is None else round(window, 3),
        busy_s=round(sum(j.exec_s for j in traffic.jobs), 3) if traffic else None,
        options=tuple(options),
    )
