"""The tagger's settings: one typed object per concern, built once at the entry point.

Every field reads ``TAGGER_<FIELD>`` from the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["CostSettings"]


class CostSettings(BaseSettings):
    """``podpulse cost`` and ``podpulse advise``: where runs are read, and the model's knobs."""

    model_config = env_settings("TAGGER_")

    # Prefixed cost_/advise_: the tagger's other commands have settings of their own, and
    # each variable is read by exactly one setting.
    cost_results_dir: Path = Field(
        default=Path("results"),
        description="Where cost and advise read runs (<dir>/<run_id>/requests.csv); the "
        "prober writes them to PROBER_RESULTS_DIR, 'results' by default too.",
    )
    cost_cold_start_s: float = Field(
        default=45.0,
        ge=0,
        le=3600,
        description="Seconds a new worker takes before its first job (billed, and waited for "
        "by that job): 30-60 s for a 22 GB model on RunPod.",
    )
    advise_requests: int = Field(
        default=2000,
        ge=100,
        le=100_000,
        description="Requests the advisor simulates for each candidate configuration.",
    )
    advise_max_workers: int = Field(
        default=5, ge=1, le=20, description="The largest workersMax the advisor tries."
    )
    advise_seed: int = Field(
        default=0, description="Seed of the advisor's draws (the same for every candidate)."
    )
