"""Settings every podpulse process shares, and secrets read where they are used.

This is the only module in podpulse.common that reads ``os.environ``: settings are built once at
a process's entry point and passed down; secrets are read where they are used (and kept for at
most a second), so a rotated key or webhook URL takes effect without a restart.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasGenerator, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "ALERTER_RECEIVER_TOKEN",
    "ALERT_WEBHOOK_URL",
    "DEFAULT_RUNPOD_ENDPOINT_BASE_URL",
    "DEFAULT_RUNPOD_MANAGEMENT_BASE_URL",
    "DEFAULT_SECRET_TTL_S",
    "KNOWN_SECRETS",
    "RUNPOD_API_KEY",
    "SLACK_WEBHOOK_URL",
    "CommonSettings",
    "LogFormat",
    "LogLevel",
    "Secret",
    "SecretError",
    "TelemetrySettings",
    "check_endpoint_id",
    "describe_settings_error",
    "env_settings",
    "known_secret_values",
    "settings_variable",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["auto", "json", "console"]

# RunPod's public APIs. Declared here, as the defaults of RUNPOD_ENDPOINT_BASE_URL and
# RUNPOD_MANAGEMENT_BASE_URL; the clients in podpulse.common.runpod default to the same names.
DEFAULT_RUNPOD_ENDPOINT_BASE_URL = "https://api.runpod.ai/v2"
DEFAULT_RUNPOD_MANAGEMENT_BASE_URL = "https://api.runpod.io/v2"

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# RunPod endpoint ids are short lowercase letters and digits ("jpnw0v75y3qoql" in RunPod's API
# reference); the twin's default is "podpulse-twin", hence the hyphen. An API key ("rpa_" and
# 40-odd upper-case characters) can never match, so a key pasted into RUNPOD_ENDPOINT_ID is
# refused instead of printed in every run's target line and written to its target.json.
_ENDPOINT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

_TRACES_EXPORTERS = frozenset({"otlp", "console", "none"})
# The env_prefix of every podpulse settings class; no variable carries it (see env_settings).
# A NUL: no environment variable's name can contain one, so the by-name lookup never matches.
_BY_NAME_PREFIX = "\x00"


def check_endpoint_id(value: str) -> str:
    """``value`` if it has the shape of a RunPod endpoint id, else ValueError.

    Every reader of an endpoint id (settings, the twin's, podpulse.toml) uses this one, so a
    twin's id is always one the prober accepts. The message never echoes the value: what
    fails this check may well be a key.
    """
    if not _ENDPOINT_ID.match(value):
        raise ValueError(
            "not an endpoint id: RunPod endpoint ids are 1-32 lowercase letters, digits "
            "or '-' (e.g. jpnw0v75y3qoql); an API key belongs in RUNPOD_API_KEY"
        )
    return value


def env_settings(prefix: str) -> SettingsConfigDict:
    """podpulse's naming scheme: field ``foo_bar`` of a settings class reads ``<prefix>FOO_BAR``.

    Each service has its prefix (``PODPULSE_`` for what every process shares, ``TWIN_``,
    ``WORKER_``, ``PROBER_``, ...). A field whose variable users already know from RunPod or
    OpenTelemetry (``REDIS_URL``, ``RUNPOD_ENDPOINT_ID``) sets that exact name as its
    ``validation_alias`` instead. Either way a field reads exactly one variable, and a bad
    value's error names that variable. Fields stay settable by name in code.
    ``extra="ignore"``: every service reads the same environment, and the other services'
    variables are not errors here.
    """
    return SettingsConfigDict(
        # The variable's name becomes the field's validation alias, so pydantic's errors name
        # it, and an explicit alias (REDIS_URL) simply takes its place.
        alias_generator=AliasGenerator(validation_alias=lambda field: f"{prefix}{field.upper()}"),
        # validate_by_name makes pydantic-settings also look a field up by <env_prefix><name>:
        # for an aliased field that would be a second, undocumented variable
        # (PODPULSE_REDIS_URL). Pointed at a prefix no variable can have, it finds nothing.
        env_prefix=_BY_NAME_PREFIX,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )


def settings_variable(settings_cls: type[BaseSettings], field_name: str) -> str:
    """The environment variable a field of a podpulse settings class reads, e.g. REDIS_URL."""
    alias = settings_cls.model_fields[field_name].validation_alias
    if not isinstance(alias, str):
        raise TypeError(
            f"{settings_cls.__name__}.{field_name} has no single variable name: build its "
            "model_config with env_settings(prefix) or give it a str validation_alias"
        )
    return alias


def describe_settings_error(exc: ValidationError) -> str:
    """Which variable is wrong and why, never its value: a bad REDIS_URL can hold a password.

    Validators word their messages without the value; as a second guard, a message that
    quotes the whole value anyway has it replaced by ``<value>``.
    """
    return "; ".join(_describe(err) for err in exc.errors(include_url=False))


# Shorter values cannot hold a secret, and replacing them would garble the message ("1").
_REDACT_MIN_CHARS = 4


def _describe(err: ErrorDetails) -> str:
    # pydantic words a validator's ValueError "Value error, <message>"; the message is enough.
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, str) and len(value) >= _REDACT_MIN_CHARS:
        message = message.replace(repr(value), "<value>").replace(value, "<value>")
    where = ".".join(str(part) for part in err["loc"])
    # A check across fields (workers_min <= workers_max) belongs to no single variable.
    return f"{where}: {message}" if where else message


class CommonSettings(BaseSettings):
    """What every podpulse process needs: where the bus is, how to log, which endpoint."""

    model_config = env_settings("PODPULSE_")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias="REDIS_URL",
        description="Redis holding the Celery queues and the redbeat schedule and lock.",
    )
    log_level: LogLevel = Field(
        default="INFO",
        description="Lowest level written, for podpulse and for every stdlib logger.",
    )
    log_format: LogFormat = Field(
        default="auto",
        description="'json' lines, 'console' for people, or 'auto': JSON unless stderr is a TTY.",
    )
    runpod_endpoint_id: str | None = Field(
        default=None,
        validation_alias="RUNPOD_ENDPOINT_ID",
        description="The hosted serverless endpoint probed, alerted on and released.",
    )
    runpod_endpoint_base_url: str = Field(
        default=DEFAULT_RUNPOD_ENDPOINT_BASE_URL,
        validation_alias="RUNPOD_ENDPOINT_BASE_URL",
        description="Base of RunPod's public job API ({base}/{endpoint_id}/run and friends).",
    )
    runpod_management_base_url: str = Field(
        default=DEFAULT_RUNPOD_MANAGEMENT_BASE_URL,
        validation_alias="RUNPOD_MANAGEMENT_BASE_URL",
        description="Base of RunPod's v2 management API (PATCH {base}/serverless/{id}).",
    )
    visibility_timeout_s: int = Field(
        default=7200,
        ge=1,
        description=(
            "Seconds before Redis hands an unacknowledged task to another worker. It must "
            "exceed the longest task (a 60-minute soak) or that task runs twice."
        ),
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        # PODPULSE_LOG_LEVEL=debug is what people type; the Literal keeps the canonical spelling.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(_REDIS_SCHEMES)}")
        return value

    @field_validator("runpod_endpoint_id")
    @classmethod
    def _endpoint_id_shape(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint_id(value)

    @field_validator("runpod_endpoint_base_url", "runpod_management_base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            has_userinfo = parts.username is not None or parts.password is not None
            host = parts.hostname
        except ValueError:  # a malformed port or IPv6 address
            raise ValueError("not a URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if has_userinfo:
            # The URL is printed and written to every run's target.json; credentials in it
            # would be too. The key goes in RUNPOD_API_KEY, sent as a bearer token.
            raise ValueError("must not carry a user or password (user:pass@); use RUNPOD_API_KEY")
        # Callers join paths with "/"; a trailing slash would give "//run", which RunPod 404s.
        return value.rstrip("/")


class TelemetrySettings(BaseSettings):
    """The standard ``OTEL_*`` variables podpulse decides on itself.

    Endpoint, headers, timeout, compression, resource attributes and batch sizes are left to
    the OpenTelemetry SDK, which reads its own variables; these are the ones it leaves to the
    program that assembles the pipeline.
    """

    # The OpenTelemetry specification's own names: field sdk_disabled reads OTEL_SDK_DISABLED.
    model_config = env_settings("OTEL_")

    sdk_disabled: bool = Field(
        default=False,
        description="true: build a provider that records nothing and exports nothing.",
    )
    # NoDecode: pydantic-settings would parse a tuple from JSON; the validator splits commas.
    traces_exporter: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("otlp",),
        description="Comma-separated exporters: 'otlp' (OTLP/HTTP), 'console', or 'none'.",
    )

    @field_validator("traces_exporter", mode="before")
    @classmethod
    def _split_exporters(cls, value: object) -> object:
        # The spec's format is a comma-separated list, not the JSON pydantic-settings expects.
        if not isinstance(value, str):
            return value
        names = tuple(part.strip().lower() for part in value.split(",") if part.strip())
        unknown = sorted(set(names) - _TRACES_EXPORTERS)
        if unknown:
            raise ValueError(
                f"unsupported exporter name; use {', '.join(sorted(_TRACES_EXPORTERS))}"
            )
        return names or ("none",)


class SecretError(RuntimeError):
    """A secret is missing, or its ``*_FILE`` cannot be read."""


# Long enough that a busy logger (the redactor asks for every secret on every event) costs one
# file read per second, short enough that a rotated key is in use before anyone checks.
DEFAULT_SECRET_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class _FileRead:
    """What reading ``<NAME>_FILE`` gave, and when: a value, nothing, or why it failed."""

    path: str
    read_at: float
    value: str | None
    error: str | None


class Secret:
    """A secret named by an environment variable, or by a file named in ``<NAME>_FILE``.

    The variable is looked up on every :meth:`get` (an in-memory lookup). The file, the usual
    way a mounted Kubernetes or Docker secret is rotated, is read again once *ttl_s* seconds
    have passed on *clock* since the last read, or at once when ``<NAME>_FILE`` names another
    path; so a rotation takes effect within *ttl_s*, without a restart. A failed read is kept
    just as long. The object itself is safe to log: its repr and str show the name, never the
    value.
    """

    __slots__ = ("_clock", "_last_read", "_ttl_s", "description", "name")

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        ttl_s: float = DEFAULT_SECRET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self.name = name
        self.description = description
        self._ttl_s = ttl_s
        self._clock = clock
        self._last_read: _FileRead | None = None

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
        read = self._read(path)
        if read.error is not None:
            raise SecretError(read.error)
        return read.value

    def origin(self) -> Literal["environment", "file"] | None:
        """Where :meth:`get` takes the value from now: the variable, the file, or nowhere."""
        if os.environ.get(self.name, ""):
            return "environment"
        return "file" if os.environ.get(self.file_variable, "") else None

    def file_path(self) -> Path | None:
        """The file ``<NAME>_FILE`` names, or None; rotation replaces this file."""
        path = os.environ.get(self.file_variable, "")
        return Path(path) if path else None

    def require(self) -> str:
        """The current value, or SecretError naming both places it could have come from."""
        value = self.get()
        if value is None:
            raise SecretError(
                f"secret {self.name} is not set: set {self.name} or point "
                f"{self.file_variable} at a file holding it"
            )
        return value

    def _read(self, path: str) -> _FileRead:
        now = self._clock()
        last = self._last_read
        if last is not None and last.path == path and now - last.read_at < self._ttl_s:
            return last
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            why = f"{self.file_variable}={path} cannot be read ({exc.strerror or exc})"
            read = _FileRead(path, now, None, why)
        else:
            read = _FileRead(path, now, text or None, None)
        # One assignment: a thread racing this one sees the old read or the new, never half.
        self._last_read = read
        return read

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name

    def __hash__(self) -> int:
        return hash((Secret, self.name))


RUNPOD_API_KEY = Secret(
    "RUNPOD_API_KEY",
    description="RunPod API key, sent as a bearer token to the job and management APIs.",
)
SLACK_WEBHOOK_URL = Secret(
    "SLACK_WEBHOOK_URL",
    description="Slack incoming-webhook URL alerts are posted to; the URL is the credential.",
)
ALERT_WEBHOOK_URL = Secret(
    "ALERT_WEBHOOK_URL",
    description="Generic webhook URL alerts are posted to as JSON.",
)
ALERTER_RECEIVER_TOKEN = Secret(
    "ALERTER_RECEIVER_TOKEN",
    description="Bearer token the alerter's OTLP receiver requires (unset: no token needed).",
)
KNOWN_SECRETS: tuple[Secret, ...] = (
    RUNPOD_API_KEY,
    SLACK_WEBHOOK_URL,
    ALERT_WEBHOOK_URL,
    ALERTER_RECEIVER_TOKEN,
)


def known_secret_values(secrets: Iterable[Secret] = KNOWN_SECRETS) -> tuple[str, ...]:
    """The current values of those *secrets* that are set, for the log redactor.

    An unreadable ``*_FILE`` is skipped rather than raised: the redactor runs inside logging,
    where an exception would hide the very message that reports the problem.
    """
    values: list[str] = []
    for secret in secrets:
        try:
            value = secret.get()
        except SecretError:
            continue
        if value:
            values.append(value)
    return tuple(values)
