"""``podpulse up``'s settings: one typed object, built once in the command and passed down.

Every field reads ``STACK_<FIELD>`` (``STACK_STOP_GRACE_S=10``); the flags of ``podpulse up``
win over them. Redis comes from the common ``REDIS_URL``, the hosted endpoint from
``RUNPOD_ENDPOINT_ID``; the twin, the prober and the alerter read their own variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["StackSettings"]


class StackSettings(BaseSettings):
    """Where the stack writes, which ports it serves, how it schedules, restarts and stops."""

    model_config = env_settings("STACK_") | {"frozen": True}

    log_dir: Path = Field(
        default=Path(".podpulse/logs"),
        description="One log file per service (<name>.log), the stack's status.json, and the "
        "data of a Redis the stack starts itself.",
    )
    results_dir: Path = Field(
        default=Path("results"),
        description="Where the prober writes its runs (given to it as PROBER_RESULTS_DIR); the "
        "status view shows the newest summary.json here.",
    )
    twin_port: int = Field(default=8765, ge=1, le=65535, description="Port of the local twin.")
    otlp_port: int = Field(
        default=4318,
        ge=1,
        le=65535,
        description="Port of the alerter's OTLP/HTTP receiver; every service exports its spans "
        "there (OTEL_EXPORTER_OTLP_ENDPOINT) when the alerter is installed.",
    )
    smoke_every_s: float = Field(
        default=15,
        gt=0,
        description="With the twin: seconds between smoke probes (PROBER_SMOKE_EVERY_S). "
        "Against a hosted endpoint the prober's own schedule stands: probes cost money.",
    )
    smoke_concurrency: int = Field(
        default=5,
        ge=1,
        description="With the twin: requests a smoke probe sends at once "
        "(PROBER_SMOKE_CONCURRENCY). With 15 s between probes of 5 requests that is 20 spans "
        "a minute, so the default rules (10 samples in a 1-minute window) judge a slow "
        "handler within a minute, even one of 6 s a job.",
    )
    smoke_first_after_s: float = Field(
        default=15,
        gt=0,
        description="With the twin: the first smoke probe this long after beat starts "
        "(PROBER_SMOKE_FIRST_AFTER_S), so a newcomer sees the loop at once.",
    )
    prober_concurrency: int = Field(
        default=2, ge=1, description="Processes of the prober's Celery worker (-c)."
    )
    ready_timeout_s: float = Field(
        default=90,
        gt=0,
        description="A service not ready this long after it started is stopped and restarted.",
    )
    stop_grace_s: float = Field(
        default=5,
        gt=0,
        description="How long a stopping service may take after SIGTERM before its processes "
        "are killed (SIGKILL).",
    )
    restart_base_s: float = Field(
        default=1, ge=0, description="First back-off before a crashed service is restarted."
    )
    restart_max_s: float = Field(
        default=30, gt=0, description="Longest back-off between restarts of a service."
    )
    stable_after_s: float = Field(
        default=60,
        gt=0,
        description="A service ready this long counts as healthy again: its next crash "
        "restarts after the first back-off, not the last.",
    )

    @model_validator(mode="after")
    def _backoff_bounds(self) -> StackSettings:
        if self.restart_base_s > self.restart_max_s:
            raise ValueError("restart_base_s must not exceed restart_max_s")
        if self.twin_port == self.otlp_port:
            raise ValueError("twin_port and otlp_port must differ")
        return self
