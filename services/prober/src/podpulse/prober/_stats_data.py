"""The JSON form of ``RunStats`` that shards hand over (the Redis board, stats-shard<i>.json).

Shards of one run exchange their statistics through Redis and files another process wrote,
so the merger reads them through this one model: a damaged or foreign entry is an error naming
the field, never a half-read ``RunStats`` or a bare ``KeyError``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

__all__ = ["HistogramData", "Metric", "RunStatsData"]

Metric = Literal["total", "exec", "delay", "overhead", "schedule_lag"]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HistogramData(_Data):
    """A histogram's buckets: ``counts`` maps a bucket (value / resolution) to its count."""

    resolution_ms: float = Field(gt=0)
    counts: dict[NonNegativeInt, NonNegativeInt]


class RunStatsData(_Data):
    """Every part of a ``RunStats``, windows included."""

    window_s: float | None = Field(default=None, gt=0)
    origin: float | None = None
    hist: dict[Metric, HistogramData]
    outcomes: dict[str, NonNegativeInt]
    examples: dict[str, list[str]]
    input_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    token_exec_units: NonNegativeInt
    rate_limited: NonNegativeInt
    first_intended: float | None
    last_done: float | None
    windows: dict[NonNegativeInt, RunStatsData]
