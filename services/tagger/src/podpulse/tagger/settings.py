"""The tagger's settings: one typed object per concern, built once at the entry point.

Release settings read ``TAGGER_RELEASE_<FIELD>`` (``TAGGER_RELEASE_AUTO=true``); their paths
are relative to the repository a release runs in (the current one for ``podpulse release``,
``TAGGER_RELEASE_REPO`` for the Celery task). Cost and advice settings read
``TAGGER_COST_*`` and ``TAGGER_ADVISE_*``, endpoint settings ``TAGGER_ENDPOINT_*``. The
endpoint itself (``RUNPOD_ENDPOINT_ID``, ``RUNPOD_MANAGEMENT_BASE_URL``) and its key
(``RUNPOD_API_KEY``/``RUNPOD_API_KEY_FILE``) are common settings and secrets, not the tagger's.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["CostSettings", "EndpointSettings", "ReleaseSettings"]


class ReleaseSettings(BaseSettings):
    """The release gate, where the deployment file, records and results are, auto-release."""

    model_config = env_settings("TAGGER_RELEASE_")

    deployment_file: Path = Field(
        default=Path("podpulse.toml"),
        description="The deployment file a release records, relative to the repository root.",
    )
    records_file: Path = Field(
        default=Path("DEPLOYMENT.md"),
        description="Where release records are appended, relative to the repository root. "
        "Its own changes never make the tree count as dirty.",
    )
    results_dir: Path = Field(
        default=Path("results"),
        description="The prober's results (its PROBER_RESULTS_DIR), searched for the latest "
        "soak; relative to the repository root. Its files never make the tree count as dirty.",
    )
    max_evidence_age_s: float = Field(
        default=86_400,
        gt=0,
        description="Freshness window: the soak a release rests on must have ended at most "
        "this many seconds ago (and after the released commit was made).",
    )
    tag_suffix: str = Field(
        default="-production",
        pattern=r"^-[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Computed tags are v<major>.<minor><suffix>; the next one bumps the minor.",
    )
    lock_timeout_s: float = Field(
        default=60,
        gt=0,
        description="How long a release waits for another one in the same repository to end.",
    )
    auto: bool = Field(
        default=False,
        description="true: the tagger's Celery task releases when a passing soak of the "
        "deployment's endpoint completes (the soak-completed event).",
    )
    repo: Path = Field(
        default=Path(),
        description="The git repository the Celery task releases (podpulse release uses the "
        "current one).",
    )
    push_remote: str | None = Field(
        default=None,
        min_length=1,
        description="Remote the Celery task pushes a new tag to; unset: it does not push.",
    )


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
        description="Requests cost and advise simulate for each configuration they price (the "
        "same draws in both, so they agree).",
    )
    advise_max_workers: int = Field(
        default=5, ge=1, le=20, description="The largest workersMax the advisor tries."
    )
    advise_seed: int = Field(
        default=0,
        description="Seed of cost's and advise's draws (the same for every configuration).",
    )


class EndpointSettings(BaseSettings):
    """``podpulse endpoint``: where applied changes are kept, how long the bus is tried."""

    model_config = env_settings("TAGGER_")

    endpoint_history_file: Path = Field(
        default=Path(".podpulse/endpoint-history.jsonl"),
        description="JSON-lines history of every endpoint config change podpulse applied "
        "(podpulse endpoint history reads it).",
    )
    endpoint_publish_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries at publishing endpoint_config_changed before the command says on "
        "stderr that the event was not sent (the change itself is applied and kept).",
    )
