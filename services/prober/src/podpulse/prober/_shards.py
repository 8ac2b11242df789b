"""One run split over shards, and its shards' statistics merged back exactly.

Shard ``i`` of ``k`` runs its share of every level: closed loop, its slots and runs in
proportion; open loop, every k-th arrival of the one global schedule (and its share of the
in-flight cap), so the shards together send exactly the unsharded run.

Each shard returns a ``RunStats`` per level (written to ``stats-shard<i>.json``); merging them
adds histogram buckets and counters, so the merged P95 is the P95 over every request of the
run, exactly as one process would have measured it. An average of the shards' P95s is the P95
of no set of requests: one shard that met a slow worker moves the run's tail by far more (or
less) than its share of the average. Where the shards run and how their statistics travel is
podpulse.prober._celery_shards.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from podpulse.common.probe_spec import ProbeSpec

from ._load import Load
from ._results_dir import write_json
from ._run_stats import RunStats

__all__ = [
    "check_sharding",
    "merge_shards",
    "merge_stats",
    "shard_load",
    "stats_from_json",
    "stats_to_json",
    "write_shard_stats",
]


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


# --- the shards' statistics, merged --------------------------------------------------------


def merge_stats(parts: Sequence[Mapping[int, RunStats]]) -> dict[int, RunStats]:
    """Merge the per-level RunStats of several shards."""
    merged: dict[int, RunStats] = {}
    for part in parts:
        for level, stats in part.items():
            merged[level] = merged[level].merge(stats) if level in merged else stats
    return merged


def merge_shards(parts: Mapping[int, Mapping[int, RunStats]], shards: int) -> dict[int, RunStats]:
    """The run's statistics per concurrency level from every shard's; exact, never averaged.

    *parts* maps shard index to that shard's ``{level: RunStats}``. Raises ValueError when a
    shard of ``0..shards-1`` is missing or an unknown one is present: a merge over part of
    a run would report its percentiles as the run's.
    """
    expected = set(range(shards))
    if shards < 1 or set(parts) != expected:
        missing = sorted(expected - set(parts))
        extra = sorted(set(parts) - expected)
        raise ValueError(f"shards of 0..{shards - 1}: missing {missing}, unexpected {extra}")
    return merge_stats([parts[index] for index in range(shards)])


def stats_to_json(stats: Mapping[int, RunStats]) -> dict[str, Any]:
    """One shard's ``{level: RunStats}`` as JSON (levels become string keys)."""
    return {str(level): each.to_json() for level, each in stats.items()}


def stats_from_json(data: Mapping[str, Any]) -> dict[int, RunStats]:
    """Read :func:`stats_to_json` output (or a shard's stats-shard<i>.json) back."""
    return {int(level): RunStats.from_json(each) for level, each in data.items()}


def write_shard_stats(folder: Path, shard: int, results: Mapping[int, RunStats]) -> Path:
    """``stats-shard<i>.json``: this shard's RunStats per level, for the merger."""
    return write_json(folder / f"stats-shard{shard}.json", stats_to_json(results))
