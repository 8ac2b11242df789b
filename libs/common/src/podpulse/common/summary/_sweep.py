"""A sweep over concurrency levels: its table and the level it recommends."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import (
    Field,
    model_validator,
)

from ..probe_spec import RecommendBy
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
    goodput_rps: float | None = Field(
        default=None, description="Requests/s that met every per-request target."
    )
    ttft_p95_ms: float | None = Field(default=None, description="Streamed runs only.")


class Recommendation(_Model):
    """The level to run at and how close it came to failing: by the SLO, the highest level
    that passes with every lower one passing; by goodput, the level with the most."""

    concurrency: Count
    tightest: Tightest
    failed_levels: tuple[int, ...]


class SweepResult(_Model):
    """A sweep's table and recommendation (None: nothing to recommend).

    The recommendation must be the one its table gives. By the SLO (the default): the highest
    level that passes with every lower level passing too (None: the lowest level failed). By
    goodput: the level with the highest goodput, the lowest such level on a tie (None: no
    level had a request meet every target).
    """

    table: tuple[SweepRow, ...] = Field(min_length=1)
    recommendation: Recommendation | None
    recommend_by: RecommendBy = Field(default="slo", description="slo or goodput.")

    @model_validator(mode="after")
    def _recommendation_follows_the_table(self) -> Self:
        levels = [row.concurrency for row in self.table]
        if levels != sorted(set(levels)):
            raise ValueError(f"table levels must be distinct and ascending, got {levels}")
        best = best_row(self.table, self.recommend_by)
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


def best_row(table: tuple[SweepRow, ...], by: RecommendBy) -> SweepRow | None:
    """The row a sweep recommends (``table`` ascending by concurrency)."""
    if by == "goodput":
        scored = [row for row in table if row.goodput_rps]
        # max keeps the first of equals: the lowest level, which costs the least.
        return max(scored, key=lambda row: row.goodput_rps or 0.0) if scored else None
    best: SweepRow | None = None
    for row in table:
        if row.status != "PASS":
            break
        best = row
    return best
