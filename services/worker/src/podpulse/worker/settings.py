"""The worker's settings: one typed object, built once in ``__main__`` and passed down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from podpulse.common.settings import ALIAS_ONLY_ENV

__all__ = ["WorkerSettings"]


class WorkerSettings(BaseSettings):
    """What a worker process serves and how; read from the environment."""

    model_config = ALIAS_ONLY_ENV

    handler: str = Field(
        default="calibrated",
        validation_alias="PODPULSE_HANDLER",
        description="'calibrated', 'model', or MODULE:FUNC naming an async or sync handler.",
    )
    worker_max_concurrency: int = Field(
        default=1,
        ge=1,
        le=4096,
        validation_alias="WORKER_MAX_CONCURRENCY",
        description="Jobs one worker runs at once (the SDK's concurrency_modifier).",
    )

    runpod_log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = Field(
        default="INFO",
        validation_alias="RUNPOD_LOG_LEVEL",
        description="The runpod SDK's log level. Not DEBUG in production: at DEBUG the SDK "
        "prints every handler output, answers included, straight to stdout.",
    )
    parent_pid: int | None = Field(
        default=None,
        validation_alias="PODPULSE_PARENT_PID",
        description="Set by the twin: the worker exits when that process is gone.",
    )

    def concurrency_modifier(self) -> Callable[[int], int]:
        """The SDK's concurrency_modifier: always WORKER_MAX_CONCURRENCY."""
        limit = self.worker_max_concurrency
        return lambda _current: limit

    # Calibrated handler: a stand-in with known timing and failure behaviour.
    exec_ms: float = Field(
        default=50.0,
        ge=0,
        validation_alias="CALIBRATED_EXEC_MS",
        description="Mean execution time of one calibrated job in milliseconds.",
    )
    exec_distribution: Literal["fixed", "uniform", "normal", "lognormal"] = Field(
        default="fixed",
        validation_alias="CALIBRATED_DISTRIBUTION",
        description="How execution times are drawn around exec_ms.",
    )
    exec_jitter: float = Field(
        default=0.2,
        ge=0,
        le=5,
        validation_alias="CALIBRATED_JITTER",
        description="Spread of the distribution as a fraction of exec_ms (sigma for lognormal).",
    )
    error_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        validation_alias="CALIBRATED_ERROR_RATE",
        description="Share of jobs that return an error (the job FAILS, the worker lives).",
    )
    crash_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        validation_alias="CALIBRATED_CRASH_RATE",
        description="Share of jobs that kill the worker process mid-job.",
    )
    tokens_per_second: float = Field(
        default=40.0,
        gt=0,
        validation_alias="CALIBRATED_TOKENS_PER_SECOND",
        description="Decode speed the calibrated handler reports its token counts with.",
    )
    seed: int | None = Field(
        default=None,
        validation_alias="CALIBRATED_SEED",
        description="Seed for the calibrated draws; unset means a fresh one per process.",
    )

    # Model handler (podpulse.worker.handler).
    model_id: str | None = Field(
        default=None,
        validation_alias="MODEL_ID",
        description="Local path or hub id of the causal LM; unset means the tiny CPU model.",
    )
    quantization: Literal["none", "int8", "nf4", "auto"] = Field(
        default="auto",
        validation_alias="QUANTIZATION",
        description="bitsandbytes quantisation on CUDA; ignored (none) on CPU.",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "podpulse",
        validation_alias="PODPULSE_CACHE_DIR",
        description="Where the tiny model and other generated artefacts are kept.",
    )
    max_new_tokens_limit: int = Field(
        default=1024,
        ge=1,
        le=32768,
        validation_alias="WORKER_MAX_NEW_TOKENS",
        description="Largest max_new_tokens a job may ask for; larger requests are rejected.",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        validation_alias="WORKER_BATCH_WAIT_MS",
        description="How long an idle generation loop waits for companions of a first job.",
    )
    kv_reserve_tokens: int = Field(
        default=8192,
        ge=0,
        validation_alias="WORKER_KV_RESERVE_TOKENS",
        description="KV-cache positions (all jobs together) QUANTIZATION=auto keeps free.",
    )
    max_regenerations: int = Field(
        default=0,
        ge=0,
        le=5,
        validation_alias="MAX_REGENERATIONS",
        description="Retries with a new seed when validation fails; the best attempt is returned.",
    )
    regeneration_temperature: float = Field(
        default=0.7,
        gt=0,
        le=2,
        validation_alias="REGENERATION_TEMPERATURE",
        description="Temperature of a retry of a greedy job (a greedy retry would repeat itself).",
    )
    validation_min_words: int = Field(
        default=3,
        ge=0,
        validation_alias="VALIDATION_MIN_WORDS",
        description="Answers with fewer words fail the too_short check.",
    )
    validation_max_words: int = Field(
        default=800,
        ge=1,
        validation_alias="VALIDATION_MAX_WORDS",
        description="Answers with more words fail the too_long check.",
    )
    validation_ngram: int = Field(
        default=3,
        ge=1,
        le=16,
        validation_alias="VALIDATION_NGRAM",
        description="Word n-gram size of the repetition check.",
    )
    validation_max_repeat_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        validation_alias="VALIDATION_MAX_REPEAT_RATIO",
        description="Largest share of repeated n-grams an answer may have.",
    )
    validation_leak_words: int = Field(
        default=8,
        ge=2,
        validation_alias="VALIDATION_LEAK_WORDS",
        description="A verbatim run this many words long from the system prompt or the "
        "user's message counts as a leak or an echo.",
    )
    log_content: bool = Field(
        default=False,
        validation_alias="WORKER_LOG_CONTENT",
        description="Log prompt and answer text at debug level (off: career questions are "
        "personal data).",
    )
