"""A sweep over concurrency levels: its table and the level it recommends."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import (
    Field,
    model_validator,
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
    """A sweep's table and recommendation (None: the lowest level already failed).

    The recommendation must be the one its table gives: the highest level that passes with
    every lower level passing too.
    """

    table: tuple[SweepRow, ...] = Field(min_length=1)
    recommendation: Recommendation | None

    @model_validator(mode="after")
    def _recommendation_follows_the_table(self) -> Self:
        levels = [row.concurrency for row in self.table]
        if levels != sorted(set(levels)):
            raise ValueError(f"table levels must be distinct and ascending, got {levels}")
        best: SweepRow | None = None
        for row in self.table:
            if row.status != "PASS":
                break
            best = row
        if best is None:
            expected = None
        else:
            failed = tuple(row.concurrency for row in self.table if row.status == "FAIL")
            expected = Recommendation(
                concurrency=best.concurrency, tightest=best.tightest, failed_levels=failed
            )
        if self.recommendation != expected:
            wanted = "none" if expected is None else f"concurrency {expected.concurrency}"
            raise ValueError(f"the recommendation contradicts the table, which gives {wanted}")
        return self
