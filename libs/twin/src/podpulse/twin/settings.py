"""The twin's settings: ``TwinSettings`` for the platform, ``CalibratedSettings`` for its handler.

Both are built once where a twin starts (the CLI command, :func:`running_twin`, a worker
process's entry point) and passed down. The platform passes each worker process its settings
as environment variables produced from the fields themselves (``worker_env()``), so a worker
sees exactly what the twin was given, whether that came from flags, code or the
environment.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode

from podpulse.common.process import JobLoop, WorkerProcessSettings
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.settings import check_endpoint_id, env_settings, settings_variable

__all__ = ["DEFAULT_API_KEY", "CalibratedSettings", "TwinSettings", "default_worker_command"]

# The twin is a local stand-in: its default key is public on purpose, not a secret.
DEFAULT_API_KEY = "podpulse-twin-local-key"

Distribution = Literal["fixed", "uniform", "normal", "lognormal"]
RunPodLogLevel = Literal["DEBUG", "INFO", "WARN", "ERROR"]


# Worker commands that mean "the twin's own interpreter".
_BARE_PYTHONS = frozenset({"python", "python3"})


def default_worker_command() -> list[str]:
    """The twin's own SDK worker, run by the interpreter running the twin."""
    return [sys.executable, "-m", "podpulse.twin.worker"]


def _env_value(value: object) -> str:
    # What pydantic-settings parses back into the same value: strings as they are, None as
    # empty (the fields that allow None read empty as unset), everything else as JSON.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _as_env(settings: BaseSettings, names: Iterable[str]) -> dict[str, str]:
    """The environment that makes a fresh instance of ``settings``' class read these fields."""
    cls = type(settings)
    values = settings.model_dump(mode="json", include=set(names))
    return {settings_variable(cls, name): _env_value(value) for name, value in values.items()}


def _scaling_problems(exc: ValidationError) -> str:
    # Messages only, never the input: they end up on a terminal or in a log.
    parts = []
    for err in exc.errors(include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class TwinSettings(BaseSettings):
    """One twin endpoint: where it listens, how it scales, how it starts its workers.

    The defaults are what RunPod advises for an endpoint (workersMin 2, workersMax 5,
    QUEUE_DELAY 1 s, 180 s idle timeout); tests pass small values explicitly.
    """

    model_config = env_settings("TWIN_") | {"frozen": True}

    host: str = Field(default="127.0.0.1", description="Address the twin listens on.")
    port: int = Field(default=8765, ge=0, le=65535, description="Port the twin listens on.")
    endpoint_id: Annotated[str, AfterValidator(check_endpoint_id)] = Field(
        default="podpulse-twin",
        description="The endpoint id clients put in their URLs (RunPod's shape: 1-32 "
        "lowercase letters, digits or '-', so the prober accepts it too).",
    )
    api_key: SecretStr = Field(
        default=SecretStr(DEFAULT_API_KEY),
        description="Bearer key clients must send; the default is a public local key. "
        "Never a flag: a command line shows in `ps`.",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="A file holding the key (a mounted secret), read at start; used when "
        "TWIN_API_KEY is unset or empty.",
    )
    workers_min: int = Field(default=2, ge=0, description="workersMin: workers kept warm.")
    workers_max: int = Field(default=5, ge=1, description="workersMax: the scaler's ceiling.")
    idle_timeout_s: int = Field(
        default=180, ge=1, le=3600, description="Seconds an idle worker is kept before it stops."
    )
    scaler_type: ScalerType = Field(
        default=ScalerType.QUEUE_DELAY, description="QUEUE_DELAY or REQUEST_COUNT."
    )
    scaler_value: float = Field(
        default=1,
        description="QUEUE_DELAY: seconds a request may wait (>= 0.5); "
        "REQUEST_COUNT: requests per worker (a whole number >= 1).",
    )
    handler: str = Field(
        default="calibrated",
        description="What the twin's own worker serves: 'calibrated', 'calibrated-stream', or "
        "MODULE:FUNC naming a runpod handler (sync, async or a generator).",
    )
    # NoDecode: the variable is a command line, split as a shell would, not JSON.
    worker_command: Annotated[list[str], NoDecode] = Field(
        default_factory=default_worker_command,
        min_length=1,
        description="The command each worker process runs (default: this Python running "
        "podpulse.twin.worker). 'python -m podpulse.worker' runs the model worker instead; "
        "a bare 'python' or 'python3' is the twin's own interpreter.",
        json_schema_extra={
            "env_type": "a command line, split as a shell would",
            "env_default": "python -m podpulse.twin.worker",
        },
    )
    worker_concurrency: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Jobs one of the twin's own workers runs at once. At its limit the runpod "
        "SDK's stock loop (job_loop 'sdk') sleeps 1 s before asking for more work, as on "
        "RunPod; it shows as queue delay.",
    )
    job_loop: JobLoop = Field(
        default="fast",
        description="The job loop every worker runs, given to it as WORKER_JOB_LOOP: 'fast' "
        "(podpulse's) or 'sdk' (the runpod SDK's stock loop, as plain SDK workers run on "
        "hosted RunPod).",
    )
    dispatch_ms: float = Field(
        default=0.0,
        ge=0,
        le=600_000,
        description="The platform's routing time: a job reaches a worker this long after it "
        "is queued and the worker is free (overlapping the SDK's pause between asks), counted "
        "as queue time.",
    )
    api_latency_ms: float = Field(
        default=0.0,
        ge=0,
        le=60_000,
        description="One-way network latency of the public API: each request waits this long "
        "before the twin reads it and again before it answers, as a hosted endpoint a network "
        "away does.",
    )
    cold_start_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra delay before a new worker process starts. The first workersMin "
        "workers start at once, as a warm endpoint's always-on workers are already up.",
    )
    take_hold_s: float = Field(
        default=20.0,
        gt=0,
        le=60,
        # The SDK abandons a job-take after 90 s; holding longer would hand jobs to nobody.
        description="How long a worker's job-take long-poll is held (at most 60 s).",
    )
    stop_hold_s: float = Field(
        default=20.0,
        gt=0,
        description="How long a worker's job-stop long-poll is held; at most a quarter of "
        "heartbeat_timeout_s, since a busy worker's job loop shows it is alive by polling again.",
    )
    stop_grace_s: float = Field(
        default=1.5,
        gt=0,
        description="How long a stopping worker may take to exit before it is killed. Its "
        "long-polls are answered at once, so an idle worker exits in a fraction of a second; "
        "with the stock loop (job_loop 'sdk') one that took a job in the last second may sit "
        "out the SDK's one-second pause first.",
    )
    ping_interval_ms: int = Field(
        default=5000,
        ge=1000,
        le=600_000,
        # The SDK sleeps int(ms) // 1000 seconds between pings: under 1000 it never pauses.
        description="RUNPOD_PING_INTERVAL given to workers; their SDK pings every whole "
        "second of it.",
    )
    heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A worker whose heartbeat (the SDK's ping) is silent this long is dead: "
        "its jobs fail, its processes are killed and the scaler replaces it. So is a busy one "
        "whose job loop makes no call this long while it pings (its main process frozen). At "
        "least three ping intervals.",
    )
    start_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a new worker process may take to call in before it is declared "
        "dead and replaced. The SDK's heartbeat starts only once the worker has loaded (a "
        "model may take minutes), so this is separate from heartbeat_timeout_s.",
    )
    worker_log_level: RunPodLogLevel = Field(
        default="WARN",
        description="RUNPOD_LOG_LEVEL given to workers (the SDK's own default is DEBUG).",
    )
    log_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "podpulse-twin",
        description="Where each worker's stdout and stderr are written.",
    )
    max_run_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="RunPod's /run payload limit (10 MB)."
    )
    max_runsync_body_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="RunPod's /runsync payload limit (20 MB)."
    )
    openai_wait_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="How long the OpenAI-compatible route waits for a job's answer (or a "
        "streamed job's first chunk) before it answers 504 and cancels the job.",
    )
    tick_s: float = Field(
        default=0.05, gt=0, le=5, description="How often the scaler and timeouts are checked."
    )

    @field_validator("scaler_type", mode="before")
    @classmethod
    def _upper_scaler(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("handler")
    @classmethod
    def _known_handler(cls, value: str) -> str:
        # Checked here so that a typo is refused before any worker starts; whether MODULE
        # imports is for the worker to find out, in its own environment.
        if value in ("calibrated", "calibrated-stream"):
            return value
        if value == "model":
            raise ValueError(
                "the model is served by its own worker: set worker_command to "
                "'python -m podpulse.worker' (--worker-command, TWIN_WORKER_COMMAND)"
            )
        module, sep, func = value.partition(":")
        if not (sep and module and func):
            raise ValueError("expected 'calibrated', 'calibrated-stream' or MODULE:FUNC")
        return value

    @field_validator("worker_command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:  # an unbalanced quote
                raise ValueError(f"cannot split the command line: {exc}") from None
        return value

    @field_validator("worker_command")
    @classmethod
    def _own_python(cls, value: list[str]) -> list[str]:
        # A bare "python" is the twin's own interpreter, as in the default command: the one
        # podpulse is installed in, whether or not its virtual environment is activated.
        if value[0] in _BARE_PYTHONS:
            return [sys.executable, *value[1:]]
        return value

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: Any) -> Any:
        # As podpulse's other secrets are read (podpulse.common.settings.Secret): the variable
        # when it is set and not empty, else the stripped text of the file <NAME>_FILE names.
        if not isinstance(data, dict):
            return data
        key_names = ("api_key", settings_variable(cls, "api_key"))
        file_names = ("api_key_file", settings_variable(cls, "api_key_file"))
        key = next((data[n] for n in key_names if data.get(n)), None)
        path = next((data[n] for n in file_names if data.get(n)), None)
        data = {k: v for k, v in data.items() if k not in key_names}
        if key is not None:
            return {**data, "api_key": key}
        if path is None:
            return data
        variable = settings_variable(cls, "api_key_file")
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{variable}={path} cannot be read ({exc.strerror or exc})") from None
        if not text:
            # Not the public default in its place: whoever set a file meant a private key.
            raise ValueError(f"{variable}={path} is empty")
        return {**data, "api_key": text}

    @model_validator(mode="after")
    def _heartbeat_outlasts_pings(self) -> Self:
        # A ping can take up to two intervals (the SDK's request timeout) and is retried with
        # back-off: fewer than three intervals would declare healthy workers dead.
        interval_s = self.ping_interval_ms // 1000
        if self.heartbeat_timeout_s < 3 * interval_s:
            raise ValueError(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s:g}) must be at least three "
                f"ping intervals ({3 * interval_s} s with ping_interval_ms "
                f"{self.ping_interval_ms})"
            )
        return self

    @model_validator(mode="after")
    def _scaling_is_valid(self) -> Self:
        # RunPod's rules live in EndpointConfig; checking here refuses a bad twin before it
        # starts instead of on its first scaling tick.
        self.scaling()
        return self

    def scaling(self) -> EndpointConfig:
        """workersMin/Max, idle timeout and scaler as RunPod's endpoint settings."""
        try:
            return EndpointConfig(
                workers_min=self.workers_min,
                workers_max=self.workers_max,
                idle_timeout_s=self.idle_timeout_s,
                scaler_type=self.scaler_type,
                scaler_value=self.scaler_value,
            )
        except ValidationError as exc:
            raise ValueError(f"invalid scaling: {_scaling_problems(exc)}") from None

    @property
    def url(self) -> str:
        """Where the twin listens, e.g. ``http://127.0.0.1:8765``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What RUNPOD_ENDPOINT_BASE_URL should be for clients of this twin."""
        return f"{self.url}/v2"

    def worker_env(self) -> dict[str, str]:
        """The variables workers read from these settings: the twin's own worker its handler
        and concurrency, every worker its job loop."""
        loop = settings_variable(WorkerProcessSettings, "job_loop")
        return {**_as_env(self, ("handler", "worker_concurrency")), loop: self.job_loop}


class CalibratedSettings(BaseSettings):
    """The calibrated handler: a stand-in with known timing, errors and crashes.

    The defaults resemble a small model on RunPod: a median of one second with a lognormal
    tail. A job's input may override the draws for that job (see ``podpulse.twin.calibrated``).
    """

    model_config = env_settings("TWIN_CALIBRATED_") | {"frozen": True}

    exec_ms: float = Field(
        default=1000.0, ge=0, description="Median execution time of one job in milliseconds."
    )
    distribution: Distribution = Field(
        default="lognormal",
        description="How execution times are drawn around exec_ms (lognormal: a real tail).",
    )
    jitter: float = Field(
        default=0.25,
        ge=0,
        le=5,
        description="Spread of a distribution as a fraction of its median (sigma for lognormal): "
        "exec_ms's, and calibrated-stream's first_token_ms and token_ms.",
    )
    error_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of jobs that return an error (the job FAILS, the worker lives).",
    )
    crash_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of jobs that kill the worker process mid-job."
    )
    tokens_per_second: float = Field(
        default=40.0, gt=0, description="Decode speed the handler reports its token counts with."
    )
    # calibrated-stream: an answer's first token comes first_token_ms after the job starts, each
    # next one token_ms after the one before, on a schedule kept from the start (time spent
    # posting a chunk is not added), so a client can recover both values from what it reads.
    first_token_ms: float = Field(
        default=200.0,
        ge=0,
        description="calibrated-stream: median time from a job's start to its first token (ms).",
    )
    first_token_distribution: Distribution = Field(
        default="fixed",
        description="calibrated-stream: how first_token_ms is drawn, once per job (spread: "
        "jitter).",
    )
    token_ms: float = Field(
        default=25.0,
        ge=0,
        description="calibrated-stream: median time between one token and the next (ms; 25 is "
        "40 tokens/s).",
    )
    token_distribution: Distribution = Field(
        default="fixed",
        description="calibrated-stream: how token_ms is drawn, once per token (spread: jitter).",
    )
    output_tokens: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="calibrated-stream: tokens in an answer, unless the job's output_tokens or "
        "a chat request's max_tokens asks for another count.",
    )
    seed: int | None = Field(
        default=None,
        description="Seed for the draws; unset (or empty) means a fresh one per process.",
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def worker_env(self) -> dict[str, str]:
        """Every field as the variable a worker process reads it from."""
        return _as_env(self, type(self).model_fields)
