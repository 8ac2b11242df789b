"""What a serverless GPU worker costs: RunPod's published per-second prices, overridable.

RunPod bills a worker by the second from the moment it is signalled to start until it has
fully stopped: its cold start, its jobs and its idle timeout. Two rates per GPU pool: *flex*
(workers the scaler starts and stops) and *active* (always-on workers, workersMin, 20-30%
cheaper). The defaults are RunPod's serverless pricing page (docs.runpod.io/serverless/pricing)
as of 2026; a ``[prices."<pool>"]`` table in podpulse.toml replaces a pool's rates or adds a
pool, and ``--price-per-hour`` replaces the always-on rate for one command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .._deployment_file import PriceSpec

__all__ = [
    "DEFAULT_PRICES",
    "HOURS_PER_MONTH",
    "GpuPrice",
    "PriceError",
    "PriceTable",
]

# The month podpulse prices in: 30 days, so "2 workers at $0.40/h" is $576 a month, the figure
# the user quotes (a calendar month would make every estimate depend on the date it ran).
HOURS_PER_MONTH = 720


@dataclass(frozen=True, slots=True)
class GpuPrice:
    """One GPU pool's per-second rates and the GPU names that run in it."""

    pool: str
    memory_gb: int
    flex_per_s: float
    active_per_s: float
    gpus: tuple[str, ...] = ()

    @property
    def flex_per_hour(self) -> float:
        """The flex rate per worker-hour."""
        return self.flex_per_s * 3600

    @property
    def active_per_hour(self) -> float:
        """The always-on rate per worker-hour."""
        return self.active_per_s * 3600


DEFAULT_PRICES: tuple[GpuPrice, ...] = (
    GpuPrice("A4000, A4500, RTX 4000", 16, 0.00016, 0.00011,
             ("NVIDIA RTX A4000", "NVIDIA RTX A4500", "NVIDIA RTX 4000 Ada Generation")),
    GpuPrice("4090 PRO", 24, 0.00031, 0.00021, ("NVIDIA GeForce RTX 4090", "RTX 4090")),
    GpuPrice("L4, A5000, 3090", 24, 0.00019, 0.00013,
             ("NVIDIA L4", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090")),
    GpuPrice("L40, L40S, 6000 Ada PRO", 48, 0.00053, 0.00037,
             ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation")),
    GpuPrice("A6000, A40", 48, 0.00034, 0.00024, ("NVIDIA RTX A6000", "NVIDIA A40")),
    GpuPrice("H100 PRO", 80, 0.00116, 0.00093,
             ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL")),
    GpuPrice("A100", 80, 0.00076, 0.00060, ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")),
    GpuPrice("H200 PRO", 141, 0.00155, 0.00124, ("NVIDIA H200",)),
    GpuPrice("B200", 180, 0.00240, 0.00190, ("NVIDIA B200",)),
)  # fmt: skip


class PriceError(ValueError):
    """A GPU the price table does not know; the message says how to add it."""


def _key(name: str) -> str:
    return " ".join(name.casefold().split())


class PriceTable:
    """The pools podpulse can price, looked up by pool name or by any GPU name in it."""

    def __init__(self, prices: Iterable[GpuPrice] = DEFAULT_PRICES) -> None:
        self._pools: dict[str, GpuPrice] = {}
        for price in prices:
            self._pools[_key(price.pool)] = price

    @classmethod
    def with_overrides(cls, overrides: dict[str, PriceSpec]) -> PriceTable:
        """The defaults with podpulse.toml's ``[prices."<pool>"]`` tables replacing or adding
        pools (a replaced pool keeps its GPU names unless the table lists its own)."""
        pools = {_key(p.pool): p for p in DEFAULT_PRICES}
        for pool, spec in overrides.items():
            old = pools.get(_key(pool))
            pools[_key(pool)] = GpuPrice(
                pool=old.pool if old else pool,
                memory_gb=old.memory_gb if old else 0,
                flex_per_s=spec.flex_per_s,
                active_per_s=spec.active_per_s,
                gpus=tuple(spec.gpus) if spec.gpus else (old.gpus if old else ()),
            )
        return cls(pools.values())

    @property
    def pools(self) -> tuple[GpuPrice, ...]:
        """Every pool, in table order."""
        return tuple(self._pools.values())

    def lookup(self, gpu: str) -> GpuPrice:
        """The pool running ``gpu`` (a pool name or a GPU name, any case); PriceError else."""
        wanted = _key(gpu)
        for price in self._pools.values():
            if wanted == _key(price.pool) or wanted in (_key(g) for g in price.gpus):
                return price
        shown = gpu if len(gpu) <= 60 else gpu[:60] + "..."
        pools = ", ".join(repr(p.pool) for p in self.pools)
        raise PriceError(
            f"no price for GPU {shown!r}: use a pool name ({pools}) "
            f'or add [prices."<pool>"] with flex_per_s, active_per_s and gpus to podpulse.toml'
        )
