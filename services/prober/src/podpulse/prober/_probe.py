"""The prober's high-level API: run a probe (or one shard of it) and write its summary.

A probe is one ``ProbeSpec``: a smoke, load, sweep or soak. ``run_probe`` sends its requests,
appending rows to ``results/<run_id>/`` as they finish, and returns ``RunStats`` per
concurrency level. An unsharded run also writes summary.json (a partial one, marked
``interrupted``, when cancelled or interrupted). A sharded run (shard i of k, e.g. one per
Celery worker) writes its rows and ``stats-shard<i>.json``; whoever collects the shards merges
their ``RunStats`` and calls ``write_summary`` once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

from opentelemetry.trace import Tracer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._engine import Arrival, Engine, Load, RequestOptions
from ._plot import plot_latency
from ._prompts import load_prompts
from ._records import RequestRecord
from ._results import ResultsWriter, check_run_id, new_run_id, read_records, run_dir, write_json
from ._soak import soak_report, soak_verdict
from ._spans import emit_span
from ._summary import RunStats, Slo
from ._sweep import recommend, sweep_rows
from ._target import Target
from .settings import ProberSettings

__all__ = [
    "ProbeKind",
    "ProbeSpec",
    "check_sharding",
    "merge_stats",
    "run_probe",
    "shard_load",
    "summarize",
    "write_shard_stats",
    "write_summary",
]

ProbeKind = Literal["smoke", "load", "sweep", "soak"]
PLOT_FILE = "latency.png"
REPORT_FILE = "report.md"


class ProbeSpec(BaseModel):
    """What to run. Shards of one run share the spec (and so the run id and ``start_at``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ProbeKind = Field(default="load", description="smoke, load, sweep or soak.")
    run_id: str = Field(description="Names results/<run_id>/.")
    concurrency: tuple[int, ...] = Field(
        default=(1,),
        description="Closed loop: requests in flight; one level, or several for a sweep. "
        "Open loop: the cap on requests in flight (0: none).",
    )
    runs: int | None = Field(default=None, ge=0, description="Measured requests per level.")
    duration_s: float | None = Field(default=None, gt=0, description="Length of each level.")
    arrival: Arrival = Field(default="closed", description="closed, constant or poisson.")
    rate: float | None = Field(default=None, gt=0, description="Open loop: requests/s.")
    warmup: int = Field(default=2, ge=0, description="Unmeasured requests sent first.")
    timeout_s: float = Field(default=120, gt=0, description="Per-request client timeout.")
    prompts: Path | None = Field(default=None, description="Prompt set; None: settings'.")
    input_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Merged into every job input (tests, fault drills)."
    )
    policy: dict[str, int | bool] | None = Field(
        default=None, description="RunPod job policy, e.g. {'executionTimeout': 60000}."
    )
    window_s: float | None = Field(
        default=None, gt=0, description="Soak window length; None: settings' soak_window_s."
    )
    start_at: float | None = Field(
        default=None,
        description="Epoch seconds the measured part starts (after warm-up). Shards of one "
        "run must share it: it aligns their schedules and their soak windows.",
    )
    seed: int | None = Field(default=None, description="Seed of Poisson arrivals.")

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        return check_run_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.runs is None and self.duration_s is None:
            raise ValueError("give runs, duration_s, or both")
        if not self.concurrency:
            raise ValueError("concurrency needs at least one level")
        floor = 0 if self.arrival != "closed" else 1
        if any(level < floor for level in self.concurrency):
            raise ValueError(f"concurrency levels must be >= {floor}")
        if len(self.concurrency) > 1 and self.kind != "sweep":
            raise ValueError(f"several concurrency levels make a sweep, not a {self.kind}")
        if self.arrival != "closed" and self.rate is None:
            raise ValueError(f"{self.arrival} arrivals need a rate (requests/s)")
        return self

    @classmethod
    def scheduled(cls, kind: ProbeKind, settings: ProberSettings, **changes: Any) -> ProbeSpec:
        """The spec of a scheduled smoke, sweep or soak (or a load) from the settings."""
        base: dict[str, Any] = {"kind": kind, "run_id": new_run_id(kind)}
        if kind == "smoke":
            base |= {"concurrency": (settings.smoke_concurrency,), "runs": settings.smoke_runs}
        elif kind == "sweep":
            base |= {"concurrency": settings.sweep_levels, "runs": settings.sweep_runs}
        elif kind == "soak":
            base |= {
                "concurrency": (settings.soak_concurrency,),
                "duration_s": settings.soak_duration_s,
                "window_s": settings.soak_window_s,
            }
        else:
            base |= {"runs": settings.sweep_runs}
        base |= {"warmup": settings.warmup, "timeout_s": settings.timeout_s}
        return cls.model_validate(base | changes)


def _part(total: int, parts: int, index: int) -> int:
    """Share ``index`` of ``total`` split as evenly as possible over ``parts``."""
    return total // parts + (1 if index < total % parts else 0)


def _shard_seed(run_id: str) -> int:
    """The Poisson seed every shard of an unseeded run derives from its run id."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")


def check_sharding(spec: ProbeSpec, shards: int) -> None:
    """Raise ValueError when ``spec`` cannot be split over ``shards`` as asked."""
    if spec.arrival == "closed":
        return
    for level in spec.concurrency:
        _check_cap(level, shards)


def _check_cap(level: int, shards: int) -> None:
    # An open-loop cap below the shard count cannot be split: a shard given 0 would run
    # uncapped, and giving every shard 1 would let ``shards`` requests fly when the spec
    # promised the endpoint fewer. Refusing keeps the cap a promise.
    if 0 < level < shards:
        raise ValueError(
            f"an in-flight cap of {level} cannot be split over {shards} shards: "
            "use a cap of at least the shard count, 0 (no cap), or fewer shards"
        )


def shard_load(spec: ProbeSpec, level: int, shard: int = 0, shards: int = 1) -> Load | None:
    """The load shard ``shard`` of ``shards`` runs at ``level``; None when it has no share.

    Closed loop: the level's slots are split over the shards, and the runs in proportion to
    the slots. Open loop: shard i takes arrivals i, i+k, i+2k... of the one global schedule,
    so the shards together send exactly the unsharded schedule; the in-flight cap is split
    too, so it must be 0 or at least ``shards`` (``check_sharding``).
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    warmup_each = math.ceil(spec.warmup / shards) if spec.warmup else 0
    if spec.arrival == "closed":
        slots = _part(level, shards, shard)
        if slots == 0:
            return None
        runs = None
        if spec.runs is not None:
            before = sum(_part(level, shards, i) for i in range(shard))
            runs = spec.runs * (before + slots) // level - spec.runs * before // level
        return Load(
            arrival="closed",
            concurrency=slots,
            runs=runs,
            duration_s=spec.duration_s,
            warmup=warmup_each,
            index=shard,
            step=shards,
        )
    _check_cap(level, shards)
    seed = spec.seed
    if seed is None and shards > 1:
        # Shards that drew their own sequences would each keep every k-th arrival of a
        # different schedule, and the union would not be Poisson: they must share one.
        seed = _shard_seed(spec.run_id)
    return Load(
        arrival=spec.arrival,
        concurrency=_part(level, shards, shard) if level else 0,
        runs=None if spec.runs is None else _part(spec.runs, shards, shard),
        duration_s=spec.duration_s,
        rate=spec.rate,
        warmup=warmup_each,
        seed=seed,
        index=shard,
        step=shards,
    )


def _window(spec: ProbeSpec, settings: ProberSettings) -> float | None:
    if spec.kind != "soak":
        return spec.window_s
    return spec.window_s or settings.soak_window_s


async def run_probe(
    spec: ProbeSpec,
    target: Target,
    results_dir: Path,
    *,
    settings: ProberSettings | None = None,
    shard: int = 0,
    shards: int = 1,
    on_record: Callable[[RequestRecord], None] | None = None,
    tracer: Tracer | None = None,
) -> dict[int, RunStats]:
    """Run this shard of ``spec`` against ``target``; ``RunStats`` per concurrency level.

    Rows go to ``results_dir/<run_id>/`` as requests finish, and one ``runpod.job`` span per
    request to ``tracer`` (the global provider's when None). Unsharded, it also writes
    summary.json, a partial one if cancelled or interrupted (the exception propagates).
    """
    settings = settings or ProberSettings()
    if shards > 1 and spec.kind == "soak" and spec.start_at is None:
        raise ValueError("a sharded soak needs start_at, so that the shards' windows line up")
    check_sharding(spec, shards)
    prompts = load_prompts(spec.prompts or settings.prompts_path)
    folder = run_dir(results_dir, spec.run_id)
    window_s = _window(spec, settings)
    options = RequestOptions(
        timeout_s=spec.timeout_s,
        wait_ms=settings.runsync_wait_ms,
        poll_interval_s=settings.status_poll_ms / 1000,
        policy=spec.policy,  # type: ignore[arg-type]  # JobPolicy's keys, validated by RunPod
        rate_limit_retries=settings.rate_limit_retries,
    )

    def make_input(seq: int) -> dict[str, Any]:
        return prompts[seq % len(prompts)].to_input() | spec.input_overrides

    results: dict[int, RunStats] = {}
    with ResultsWriter(folder, shard=shard, shards=shards) as writer:
        if shard == 0:
            write_json(folder / "spec.json", spec.model_dump(mode="json"))
        async with target.client(timeout_s=spec.timeout_s) as client:
            try:
                for level in spec.concurrency:
                    load = shard_load(spec, level, shard, shards)
                    # Without start_at, windows count from the end of warm-up (set below).
                    placeholder = 0.0 if window_s else None
                    origin = spec.start_at if spec.start_at is not None else placeholder
                    results[level] = RunStats(window_s=window_s, origin=origin)
                    if load is None:
                        continue
                    engine = Engine(
                        client,
                        run_id=spec.run_id,
                        make_input=make_input,
                        options=options,
                        concurrency_label=level,
                        shard=shard,
                    )

                    def record(
                        rec: RequestRecord, level: int = level, engine: Engine = engine
                    ) -> None:
                        stats = results[level]
                        if stats.requests == 0 and window_s and spec.start_at is None:
                            stats.origin = engine.started_at
                        writer.write(rec)
                        stats.add(rec)
                        emit_span(
                            rec,
                            endpoint_id=target.endpoint_id,
                            kind=spec.kind,
                            model=settings.model_name,
                            tracer=tracer,
                        )
                        if on_record is not None:
                            on_record(rec)

                    engine.on_record = record
                    await engine.run(load, start_at=spec.start_at)
            except BaseException:
                # Cancelled, Ctrl-C, or a bug: what was measured is still summarised.
                _finish(folder, spec, results, settings, (shard, shards), target, interrupted=True)
                raise
    _finish(folder, spec, results, settings, (shard, shards), target, interrupted=False)
    return results


def _finish(  # noqa: PLR0917 - a private helper called from two places with the same values
    folder: Path,
    spec: ProbeSpec,
    results: Mapping[int, RunStats],
    settings: ProberSettings,
    sharding: tuple[int, int],
    target: Target,
    *,
    interrupted: bool,
) -> None:
    shard, shards = sharding
    if shards > 1:
        write_shard_stats(folder, shard, results)
    else:
        write_summary(
            folder.parent,
            spec,
            results,
            settings,
            interrupted=interrupted,
            endpoint_id=target.endpoint_id,
        )


def write_shard_stats(folder: Path, shard: int, results: Mapping[int, RunStats]) -> Path:
    """``stats-shard<i>.json``: this shard's RunStats per level, for the merger."""
    return write_json(
        folder / f"stats-shard{shard}.json",
        {str(level): stats.to_json() for level, stats in results.items()},
    )


def merge_stats(parts: list[Mapping[int, RunStats]]) -> dict[int, RunStats]:
    """Merge the per-level RunStats of several shards."""
    merged: dict[int, RunStats] = {}
    for part in parts:
        for level, stats in part.items():
            merged[level] = merged[level].merge(stats) if level in merged else stats
    return merged


def summarize(
    spec: ProbeSpec,
    results: Mapping[int, RunStats],
    settings: ProberSettings,
    *,
    interrupted: bool = False,
    endpoint_id: str | None = None,
) -> dict[str, Any]:
    """summary.json's content: per-level SLO verdicts, a sweep table, or a soak verdict.

    ``passed`` at the top is what the CLI's exit code and the completion event report: the
    SLO held, a sweep found a level to recommend (it is there to find where the SLO breaks),
    or the soak passed. An interrupted run never passes: its evidence is incomplete.
    """
    slo = Slo.from_settings(settings)
    head: dict[str, Any] = {
        "run_id": spec.run_id,
        "kind": spec.kind,
        "endpoint_id": endpoint_id,
        "interrupted": interrupted,
        "spec": spec.model_dump(mode="json"),
    }
    if spec.kind == "sweep":
        levels = {level: stats.to_summary(slo) for level, stats in results.items()}
        rows = sweep_rows(levels)
        return head | {
            "passed": not interrupted and recommend(rows) is not None,
            "levels": {str(level): summary for level, summary in levels.items()},
            "table": rows,
            "recommendation": recommend(rows),
        }
    level = spec.concurrency[0]
    stats = results.get(level, RunStats())
    summary = head | {"concurrency": level} | stats.to_summary(slo)
    summary["passed"] = summary["slo"]["passed"]
    if spec.kind == "soak" and stats.window_s is not None:
        summary["soak"] = soak_verdict(
            stats,
            p95_threshold_ms=settings.soak_p95_ms,
            min_change_pct=settings.soak_min_change_pct,
        )
        summary["passed"] = summary["soak"]["passed"]
    if interrupted:
        summary["passed"] = False
    return summary


def write_summary(
    results_dir: Path,
    spec: ProbeSpec,
    results: Mapping[int, RunStats],
    settings: ProberSettings | None = None,
    *,
    interrupted: bool = False,
    endpoint_id: str | None = None,
) -> dict[str, Any]:
    """Write summary.json (and for a soak the plot and report.md); return the summary."""
    settings = settings or ProberSettings()
    folder = run_dir(results_dir, spec.run_id)
    summary = summarize(spec, results, settings, interrupted=interrupted, endpoint_id=endpoint_id)
    if "soak" in summary:
        stats = results[spec.concurrency[0]]
        assert stats.window_s is not None
        records = read_records(folder)
        plot = None
        if records and stats.origin is not None:
            plot = plot_latency(
                records,
                summary["soak"]["windows"],
                origin=stats.origin,
                window_s=stats.window_s,
                threshold_ms=settings.soak_p95_ms,
                path=folder / PLOT_FILE,
                title=f"soak {spec.run_id}: total latency, window P95",
            ).name
        summary["soak"]["plot"] = plot
        (folder / REPORT_FILE).write_text(soak_report(spec.run_id, summary, plot), encoding="utf-8")
    write_json(folder / "summary.json", summary)
    return summary
