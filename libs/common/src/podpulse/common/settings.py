"""Settings every podpulse process shares, and secrets that are re-read on every use.

This is the only module in podpulse.common that reads ``os.environ``: settings are built once at
a process's entry point and passed down; secrets are read where they are used, so a rotated key
or webhook URL takes effect without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "ALERT_WEBHOOK_URL",
    "ALIAS_ONLY_ENV",
    "KNOWN_SECRETS",
    "RUNPOD_API_KEY",
    "SLACK_WEBHOOK_URL",
    "CommonSettings",
    "LogFormat",
    "LogLevel",
    "Secret",
    "SecretError",
    "TelemetrySettings",
    "describe_settings_error",
    "env_settings",
    "known_secret_values",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["auto", "json", "console"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_TRACES_EXPORTERS = frozenset({"otlp", "console", "none"})


# Every podpulse settings class reads a field from the environment only under its documented
# alias (REDIS_URL, MODEL_ID, ...). Fields stay settable by name in code, but the by-name
# environment lookup pydantic-settings adds for that is pointed at a prefix nobody sets, so a
# stray HANDLER or SEED in a container cannot configure a service.
ALIAS_ONLY_ENV = SettingsConfigDict(
    extra="ignore",
    validate_by_name=True,
    validate_by_alias=True,
    env_prefix="PODPULSE_FIELD_NAME__",
)


def env_settings(prefix: str) -> SettingsConfigDict:
    """podpulse's naming scheme: field ``foo_bar`` of a settings class reads ``<prefix>FOO_BAR``.

    Each service has its prefix (``PODPULSE_`` for what every process shares, ``TWIN_``,
    ``WORKER_``, ``PROBER_``, ...). A field whose variable users already know from RunPod or
    OpenTelemetry (``REDIS_URL``, ``RUNPOD_ENDPOINT_ID``, ``OTEL_*``) sets that exact name as
    its ``validation_alias`` instead. ``extra="ignore"``: every service reads the same
    environment, and the other services' variables are not errors here.
    """
    return SettingsConfigDict(
        env_prefix=prefix, extra="ignore", validate_by_name=True, validate_by_alias=True
    )


def describe_settings_error(exc: ValidationError) -> str:
    """Which variable is wrong and why, never its value: a bad REDIS_URL can hold a password."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_input=False)
    )


class CommonSettings(BaseSettings):
    """What every podpulse process needs: where the bus is, how to log, which endpoint."""

    # extra="ignore": services read their own variables from the same environment.
    model_config = ALIAS_ONLY_ENV

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias="REDIS_URL",
        description="Redis holding the Celery queues and the redbeat schedule and lock.",
    )
    log_level: LogLevel = Field(
        default="INFO",
        validation_alias="LOG_LEVEL",
        description="Lowest level written, for podpulse and for every stdlib logger.",
    )
    log_format: LogFormat = Field(
        default="auto",
        validation_alias="LOG_FORMAT",
        description="'json' lines, 'console' for people, or 'auto': JSON unless stderr is a TTY.",
    )
    runpod_endpoint_id: str | None = Field(
        default=None,
        validation_alias="RUNPOD_ENDPOINT_ID",
        description="The serverless endpoint probed, alerted on and released; unset for the twin.",
    )
    runpod_endpoint_base_url: str = Field(
        default="https://api.runpod.ai/v2",
        validation_alias="RUNPOD_ENDPOINT_BASE_URL",
        description="Base of RunPod's public job API ({base}/{endpoint_id}/run and friends).",
    )
    runpod_management_base_url: str = Field(
        default="https://api.runpod.io/v2",
        validation_alias="RUNPOD_MANAGEMENT_BASE_URL",
        description="Base of RunPod's v2 management API (PATCH {base}/serverless/{id}).",
    )
    visibility_timeout_s: int = Field(
        default=7200,
        ge=1,
        validation_alias="VISIBILITY_TIMEOUT_S",
        description=(
            "Seconds before Redis hands an unacknowledged task to another worker. It must "
            "exceed the longest task (a 60-minute soak) or that task runs twice."
        ),
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        # LOG_LEVEL=debug is what people type; the Literal keeps the canonical spelling.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"REDIS_URL must start with one of {', '.join(_REDIS_SCHEMES)}")
        return value

    @field_validator("runpod_endpoint_base_url", "runpod_management_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        # Callers join paths with "/"; a trailing slash would give "//run", which RunPod 404s.
        return value.rstrip("/")


class TelemetrySettings(BaseSettings):
    """The standard ``OTEL_*`` variables podpulse decides on itself.

    Endpoint, headers, timeout, compression, resource attributes and batch sizes are left to
    the OpenTelemetry SDK, which reads its own variables; these are the ones it leaves to the
    program that assembles the pipeline.
    """

    model_config = ALIAS_ONLY_ENV

    otel_sdk_disabled: bool = Field(
        default=False,
        validation_alias="OTEL_SDK_DISABLED",
        description="true: build a provider that records nothing and exports nothing.",
    )
    # NoDecode: pydantic-settings would parse a tuple from JSON; the validator splits commas.
    otel_traces_exporter: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("otlp",),
        validation_alias="OTEL_TRACES_EXPORTER",
        description="Comma-separated exporters: 'otlp' (OTLP/HTTP), 'console', or 'none'.",
    )

    @field_validator("otel_traces_exporter", mode="before")
    @classmethod
    def _split_exporters(cls, value: object) -> object:
        # The spec's format is a comma-separated list, not the JSON pydantic-settings expects.
        if not isinstance(value, str):
            return value
        names = tuple(part.strip().lower() for part in value.split(",") if part.strip())
        unknown = sorted(set(names) - _TRACES_EXPORTERS)
        if unknown:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: unsupported {', '.join(unknown)}; "
                f"use {', '.join(sorted(_TRACES_EXPORTERS))}"
            )
        return names or ("none",)


class SecretError(RuntimeError):
    """A secret is missing, or its ``*_FILE`` cannot be read."""


class Secret:
    """A secret named by an environment variable, or by a file named in ``<NAME>_FILE``.

    The value is read on every :meth:`get`, never cached, so rotating the variable's file (a
    mounted Kubernetes or Docker secret) takes effect without a restart. The object itself is
    safe to log: its repr and str show the name, never the value.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def file_variable(self) -> str:
        """The variable naming a file that holds the value, e.g. ``RUNPOD_API_KEY_FILE``."""
        return f"{self.name}_FILE"

    def get(self) -> str | None:
        """The current value: the variable if set and non-empty, else the file's stripped text.

        Raises SecretError when ``<NAME>_FILE`` is set but unreadable: a mount that went
        missing is a fault to report, not the same as no secret configured.
        """
        value = os.environ.get(self.name, "")
        if value:
            return value
        path = os.environ.get(self.file_variable, "")
        if not path:
            return None
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(
                f"{self.file_variable}={path} cannot be read ({exc.strerror or exc})"
            ) from exc
        return text or None

    def require(self) -> str:
        """The current value, or SecretError naming both places it could have come from."""
        value = self.get()
        if value is None:
            raise SecretError(
                f"secret {self.name} is not set: set {self.name} or point "
                f"{self.file_variable} at a file holding it"
            )
        return value

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name

    def __hash__(self) -> int:
        return hash((Secret, self.name))


RUNPOD_API_KEY = Secret("RUNPOD_API_KEY")
SLACK_WEBHOOK_URL = Secret("SLACK_WEBHOOK_URL")
ALERT_WEBHOOK_URL = Secret("ALERT_WEBHOOK_URL")
KNOWN_SECRETS: tuple[Secret, ...] = (RUNPOD_API_KEY, SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL)


def known_secret_values() -> tuple[str, ...]:
    """The current values of the known secrets that are set, for the log redactor.

    An unreadable ``*_FILE`` is skipped rather than raised: the redactor runs inside logging,
    where an exception would hide the very message that reports the problem.
    """
    values: list[str] = []
    for secret in KNOWN_SECRETS:
        try:
            value = secret.get()
        except SecretError:
            continue
        if value:
            values.append(value)
    return tuple(values)
