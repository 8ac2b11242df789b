"""The twin's configuration: one typed object built by the CLI or a test."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from podpulse.common.runpod import EndpointConfig, ScalerType

__all__ = ["DEFAULT_API_KEY", "TwinConfig"]

# The twin is a local stand-in: its default key is public on purpose, not a secret.
DEFAULT_API_KEY = "podpulse-twin-local-key"


class TwinConfig(BaseModel):
    """How one twin endpoint listens, scales and starts its workers."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8765, ge=0, le=65535, description="Port to listen on.")
    endpoint_id: str = Field(
        default="podpulse-twin",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The endpoint id clients put in their URLs.",
    )
    api_key: SecretStr = Field(
        default=SecretStr(DEFAULT_API_KEY), description="Bearer key clients must send."
    )
    scaling: EndpointConfig = Field(
        default_factory=lambda: EndpointConfig(
            workers_min=1,
            workers_max=3,
            idle_timeout_s=5,
            scaler_type=ScalerType.QUEUE_DELAY,
            scaler_value=1,
        ),
        description="workersMin/Max, scaler and idle timeout, as RunPod's endpoint settings.",
    )
    handler: str = Field(
        default="calibrated", description="calibrated, model, or MODULE:FUNC for workers."
    )
    worker_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for every worker process."
    )
    dispatch_ms: float = Field(
        default=0.0, ge=0, description="Extra latency before a taken job reaches its worker."
    )
    cold_start_ms: float = Field(
        default=0.0, ge=0, description="Extra delay before a new worker process starts."
    )
    take_hold_s: float = Field(
        default=20.0,
        gt=0,
        le=60,
        # The SDK abandons a job-take after 90 s; holding longer would hand jobs to nobody.
        description="How long a worker's job-take long-poll is held (at most 60 s).",
    )
    stop_hold_s: float = Field(
        default=20.0, gt=0, description="How long a worker's job-stop long-poll is held."
    )
    ping_interval_ms: int = Field(
        default=5000, ge=100, description="RUNPOD_PING_INTERVAL given to workers."
    )
    worker_log_level: str = Field(
        default="WARN", description="RUNPOD_LOG_LEVEL for workers (the SDK defaults to DEBUG)."
    )
    log_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "podpulse-twin",
        description="Where each worker's stdout/stderr is written.",
    )
    max_run_body_bytes: int = Field(
        default=10 * 1024 * 1024, description="RunPod's /run payload limit (10 MB)."
    )
    max_runsync_body_bytes: int = Field(
        default=20 * 1024 * 1024, description="RunPod's /runsync payload limit (20 MB)."
    )
    tick_s: float = Field(default=0.05, gt=0, description="Scaler and timeout check period.")

    @property
    def url(self) -> str:
        """Where the twin listens, e.g. ``http://127.0.0.1:8765``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What RUNPOD_ENDPOINT_BASE_URL should be for clients of this twin."""
        return f"{self.url}/v2"
