"""A probe's spec: the scheduled specs from the settings, and how one splits into shards.

Shard ``i`` of ``k`` runs its share of every level: closed loop, its slots and runs in
proportion; open loop, every k-th arrival of the one global schedule (and its share of the
in-flight cap), so the shards together send exactly the unsharded run.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from podpulse.common.summary import ProbeKind, ProbeSpec

from ._load import Load
from ._results_dir import new_run_id
from .settings import ProberSettings

__all__ = ["ProbeKind", "ProbeSpec", "check_sharding", "expected_s", "scheduled_spec", "shard_load"]


def scheduled_spec(kind: ProbeKind, settings: ProberSettings, **changes: Any) -> ProbeSpec:
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
    return ProbeSpec.model_validate(base | changes)


def expected_s(spec: ProbeSpec) -> float:
    """The longest the run can take: every request of every level up to its timeout."""
    total = 0.0
    for level in spec.concurrency:
        if spec.duration_s is not None:
            total += spec.duration_s
        else:
            waves = (spec.runs or 0) / max(level, 1)
            total += waves * spec.timeout_s
    return total + spec.warmup * spec.timeout_s


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
