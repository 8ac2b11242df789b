"""The alerter's settings: one typed object, built once at the entry point and passed down.

Every field reads ``ALERTER_<FIELD>`` (``ALERTER_BUCKET_S=10``) unless its variable is one
users already know (``ALERTMANAGER_URL``, ``ALERT_RULES_FILE``); Redis itself is the common
``REDIS_URL``. Secrets are not settings: the OTLP input's bearer token is
``ALERTER_RECEIVER_TOKEN`` (or ``ALERTER_RECEIVER_TOKEN_FILE``), and the Slack and generic
webhook URLs are ``podpulse.common.settings.SLACK_WEBHOOK_URL`` and ``ALERT_WEBHOOK_URL`` (the
variable or its ``*_FILE``); each is read on use, so a rotated value takes effect without a
restart, and never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from podpulse.common.settings import env_settings

from ._notify._url import url_problem

__all__ = ["AlerterSettings"]

# OTLP's recommended default limit for a request body, before and after decompression.
_TWENTY_MIB = 20 * 1024 * 1024


class AlerterSettings(BaseSettings):
    """How the alerter receives spans and keeps their windows, which rules it evaluates,
    where alerts go, and how hard delivery tries."""

    model_config = env_settings("ALERTER_")

    # --- Ingesting spans and keeping windows (podpulse.alerter._ingest, _windows) -----------
    max_body_bytes: int = Field(
        default=_TWENTY_MIB,
        ge=1024,
        description="Largest OTLP request body, counted after gunzip too; larger is a 413.",
    )
    max_body_bytes_in_flight: int = Field(
        default=4 * _TWENTY_MIB,
        ge=1024,
        description="Request body bytes held at once across all connections (each request "
        "counts its Content-Length, or ALERTER_MAX_BODY_BYTES when gzipped or chunked); a "
        "request past it is a 503 to retry, so many large bodies cannot exhaust memory.",
    )
    max_spans_per_request: int = Field(
        default=100_000,
        ge=1,
        description="Most spans in one OTLP request (SDKs send 512 per batch, a Collector "
        "8192 by default); more is a 413 before any is counted.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds a request body may take to arrive; a slower one is a 408 and its "
        "connection is closed (uvicorn never times a body out itself).",
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
        description="How often a process taking spans adds its new buckets into Redis, where "
        "every such process's buckets merge; stat() sees a span at most this much later.",
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

    # --- Evaluation and notification (_rules, _notify) --------------------------------------
    rules_file: Path | None = Field(
        default=None,
        validation_alias="ALERT_RULES_FILE",
        description="YAML rules file (see docs/alerter.md, 'Rules'); unset: the "
        "shipped defaults (`podpulse alerts rules` prints them).",
    )
    alertmanager_url: str | None = Field(
        default=None,
        validation_alias="ALERTMANAGER_URL",
        description="An existing Alertmanager's base URL; alerts are pushed to its "
        "/api/v2/alerts the way Prometheus pushes them. Unset: no push.",
    )
    alertmanager_resend_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between re-sends of a still-firing alert to Alertmanager "
        "(Prometheus's --rules.alert.resend-delay); endsAt is 4x this (or 4x the evaluation "
        "interval, whichever is longer) ahead, so two missed sends do not resolve it.",
    )
    external_url: str = Field(
        default="",
        description="externalURL in webhook payloads and the base of each alert's "
        "generatorURL (e.g. the alerter's public address); empty: both empty.",
    )
    state_prefix: str = Field(
        default="podpulse:alerter:",
        min_length=1,
        description="Prefix of every Redis key the evaluator and notifier keep (alert "
        "states, groups, the notification log, silences, the outbox).",
    )
    notify_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Most seconds one HTTP delivery attempt may take in all (connecting, "
        "sending, and the whole answer, however slowly it trickles in); a slower one counts "
        "as failed and is retried.",
    )
    notify_give_up_s: float = Field(
        default=86400.0,
        gt=0,
        description="A notification no receiver attempt delivered within this many seconds "
        "is dropped (counted as failed and logged); until then it is kept in Redis and "
        "retried with backoff.",
    )
    event_max_age_s: float = Field(
        default=600.0,
        gt=0,
        description="A bus event (a probe run, a release) older than this when the alerter "
        "reads it is logged and not notified: queued events outlive restarts, and a release "
        "recorded an hour ago is not news.",
    )
    events_since: float = Field(
        default=0.0,
        ge=0,
        description="Unix time: a bus event that happened before it is logged and not "
        "notified. podpulse up sets it to the stack's start, so what a joined Redis still "
        "holds from before is not news.",
    )
    # NoDecode: pydantic-settings would parse a tuple from JSON; the validator splits commas.
    endpoint_ids: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated endpoint ids whose bus events (probe runs, releases) are "
        "notified; empty: every endpoint's. podpulse up sets its own, so another deployment "
        "sharing the Redis is not announced here.",
        json_schema_extra={"env_type": "comma-separated strings", "env_default": "(every)"},
    )

    @field_validator("endpoint_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return tuple(part.strip() for part in value.split(",") if part.strip())

    @model_validator(mode="after")
    def _buckets_fit(self) -> AlerterSettings:
        if self.retention_s < self.bucket_s:
            raise ValueError("retention_s must be at least bucket_s")
        if self.metrics_window_s > self.retention_s:
            raise ValueError("metrics_window_s must not exceed retention_s")
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError("max_body_bytes_in_flight must be at least max_body_bytes")
        return self

    @field_validator("alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Never echoes the value: a URL can carry basic-auth credentials.
        if value is None or not value.strip():
            return None
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.rstrip("/")
