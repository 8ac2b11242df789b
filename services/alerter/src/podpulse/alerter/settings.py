"""The alerter's settings: one typed object, built once at the entry point and passed down.

Every field reads ``ALERTER_<FIELD>`` from the environment (``ALERTER_BUCKET_S=10``). Redis
itself is the common ``REDIS_URL``. The receiver's bearer token is a secret, not a setting:
``ALERTER_RECEIVER_TOKEN`` (or a file named in ``ALERTER_RECEIVER_TOKEN_FILE``), re-read on use.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["AlerterSettings"]

# OTLP's recommended default limit for a request body, before and after decompression.
_TWENTY_MIB = 20 * 1024 * 1024


class AlerterSettings(BaseSettings):
    """How the alerter receives spans and keeps their windows (and, below, evaluates them)."""

    model_config = env_settings("ALERTER_")

    # --- Receiving spans and keeping windows (podpulse.alerter.app, _receiver, _windows) ---
    max_body_bytes: int = Field(
        default=_TWENTY_MIB,
        ge=1024,
        description="Largest OTLP request body, counted after gunzip too; larger is a 413.",
    )
    bucket_s: float = Field(
        default=10.0,
        gt=0,
        description="Length of one window bucket; windows are whole buckets, so a 5 m window "
        "is exact to one bucket.",
    )
    retention_s: float = Field(
        default=3600.0,
        gt=0,
        description="How far back windows reach (the longest rule window); older buckets and "
        "spans that ended earlier are dropped, and Redis keys expire after it.",
    )
    max_series: int = Field(
        default=1000,
        ge=1,
        description="Most (endpoint, model) series kept; past it the idlest series is evicted "
        "and counted in podpulse_alerter_series_evicted_total.",
    )
    max_clock_skew_s: float = Field(
        default=60.0,
        ge=0,
        description="Spans ending later than now plus this are dropped as from the future.",
    )
    flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a receiver adds its new buckets into Redis, where every "
        "receiver's buckets merge; stat() sees a span at most this much later.",
    )
    redis_prefix: str = Field(
        default="podpulse:alerter:",
        min_length=1,
        description="Prefix of the alerter's Redis keys (window buckets and the series index).",
    )
    metrics_window_s: float = Field(
        default=300.0,
        gt=0,
        description="Window of the statistics GET /metrics reports per series.",
    )
    accept_twin_spans: bool = Field(
        default=True,
        description="Count spans whose podpulse.target.kind is 'twin' (a local twin's "
        "endpoint id is its own series); false ignores them.",
    )
    accept_genai_spans: bool = Field(
        default=True,
        description="Count the worker's GenAI spans (gen_ai.operation.name) as tokens/s "
        "samples of the endpoint in their runpod.endpoint.id attribute or resource.",
    )

    @model_validator(mode="after")
    def _buckets_fit(self) -> AlerterSettings:
        if self.retention_s < self.bucket_s:
            raise ValueError("retention_s must be at least bucket_s")
        if self.metrics_window_s > self.retention_s:
            raise ValueError("metrics_window_s must not exceed retention_s")
        return self

    # --- End of the receiving block. ---
