"""A probe run's spec: what the prober runs, as recorded in spec.json and in every summary."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

__all__ = ["Api", "Arrival", "ProbeKind", "ProbeSpec", "RecommendBy", "check_run_id"]

ProbeKind = Literal["smoke", "load", "sweep", "soak"]
Arrival = Literal["closed", "constant", "poisson"]
# How each request is sent: /runsync (whole answers), /run + /stream, or the OpenAI route.
Api = Literal["runsync", "stream", "openai"]
# What a sweep recommends by: the SLO table (every line passes) or the highest goodput.
RecommendBy = Literal["slo", "goodput"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe as a folder name (no separators, no leading dot)."""
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


def _finite(value: JsonValue) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


class ProbeSpec(BaseModel):
    """What to run. Shards of one run share the spec (and so the run id and ``start_at``)."""

    # No inf or NaN: a spec is written to JSON (spec.json, every summary), which has neither.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

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
    input_overrides: dict[str, JsonValue] = Field(
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
    api: Api | None = Field(
        default=None,
        description="runsync, stream (/run + /stream) or openai (the OpenAI route); None: "
        "the settings' PROBER_API.",
    )
    recommend_by: RecommendBy = Field(
        default="slo", description="A sweep recommends by the SLO table or by goodput."
    )

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        return check_run_id(value)

    @field_validator("input_overrides")
    @classmethod
    def _finite_overrides(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        # allow_inf_nan does not reach inside JsonValue; JSON's 1e400 reads as inf.
        if not _finite(value):
            raise ValueError("numbers must be finite (JSON has no inf or NaN)")
        return value

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
