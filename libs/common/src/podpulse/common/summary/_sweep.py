"""A sweep over concurrency levels: its table and the level it recommends."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from ._base import Count, Status, _Model

# --- sweeps -----------------------------------------------------------------------------------


class Tightest(_Model):
    """The SLO line with the least headroom at a level."""

    metric: str
    margin: float | None
    margin_pct: float | None
    unit: Literal["ms", "%"]


class SweepRow(_Model):
    """One level of a sweep's table."""

    concurrency: Count
    total_p50_ms: float | None
    total_p95_ms: float | None
    exec_p50_ms: float | None
    queue_p50_ms: float | None
    success_rate_pct: float | None
    status: Status
    tightest: Tightest


class Recommendation(_Model):
    """The highest level that passes with every lower one passing, and how close it came."""

    concurrency: Count
    tightest: Tightest
    failed_levels: tuple[int, ...]


class SweepResult(_Model):
    """A sweep's table and recommendation (None: the lowest level already failed)."""

    table: tuple[SweepRow, ...] = Field(min_length=1)
    recommendation: Recommendation | None
