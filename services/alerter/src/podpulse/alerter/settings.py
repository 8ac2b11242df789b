"""The alerter's settings: one typed object, built once at the entry point and passed down.

Every field reads ``ALERTER_<FIELD>`` unless its variable is one users already know
(``ALERTMANAGER_URL``, ``ALERT_RULES_FILE``). The Slack and generic webhook URLs are secrets,
not settings: they are ``podpulse.common.settings.SLACK_WEBHOOK_URL`` and
``ALERT_WEBHOOK_URL`` (the variable or its ``*_FILE``), read on every send so a rotated URL
takes effect without a restart, and never logged.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["AlerterSettings"]


class AlerterSettings(BaseSettings):
    """Which rules are evaluated, where alerts go, and how hard delivery tries."""

    model_config = env_settings("ALERTER_")

    # --- Evaluation and notification (rules, state, receivers) ------------------------------
    rules_file: Path | None = Field(
        default=None,
        validation_alias="ALERT_RULES_FILE",
        description="YAML rules file (see docs/alerter.md, 'Rules'); unset: the five "
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
        default=10.0, gt=0, description="Timeout of one HTTP delivery attempt."
    )
    notify_give_up_s: float = Field(
        default=86400.0,
        gt=0,
        description="A notification no receiver attempt delivered within this many seconds "
        "is dropped (counted as failed and logged); until then it is kept in Redis and "
        "retried with backoff.",
    )

    @field_validator("alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Never echoes the value: a URL can carry basic-auth credentials.
        if value is None or not value.strip():
            return None
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:
            raise ValueError("not a URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")
