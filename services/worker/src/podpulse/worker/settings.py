"""The model worker's settings: one typed object, built once in ``__main__`` and passed down.

Field ``foo`` reads ``WORKER_FOO``. How the process itself runs (the SDK's log level, the
twin's parent watch) is :class:`podpulse.common.process.WorkerProcessSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["WorkerSettings"]


class WorkerSettings(BaseSettings):
    """What the model worker serves and how; read from ``WORKER_*`` variables."""

    model_config = env_settings("WORKER_")

    max_concurrency: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Jobs one worker runs at once (the SDK's concurrency_modifier), batched "
        "together by the generation loop.",
    )

    def concurrency_modifier(self) -> Callable[[int], int]:
        """The SDK's concurrency_modifier: always WORKER_MAX_CONCURRENCY."""
        limit = self.max_concurrency
        return lambda _current: limit

    # Model handler (podpulse.worker.handler).
    model_id: str | None = Field(
        default=None,
        description="Local path or hub id of the causal LM; unset means the tiny CPU model.",
    )
    quantization: Literal["none", "int8", "nf4", "torchao-int8", "torchao-int4", "auto"] = Field(
        default="auto",
        description="Weight quantisation on CUDA: bitsandbytes int8 or nf4, torchao int8 or "
        "int4 weight-only, or auto: the highest precision that fits, and when several fit, the "
        "highest whose start-up probe reaches WORKER_QUANTIZATION_TARGET_TOKENS_PER_SECOND "
        "(else the fastest); ignored (none) on CPU.",
    )
    quantization_probe_s: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="Time budget of WORKER_QUANTIZATION=auto's start-up probe (each fitting "
        "candidate decodes on two random-weight layers of the model's shape); 0 chooses by "
        "fit alone.",
    )
    # Off (0) and eager by default: neither the probe nor the graph path has run on a GPU
    # yet (benchmarks/worker_gpu.py is the device check); a worker image must not crash-loop
    # on an untried start-up path. Turn them on per endpoint until the figures are in.
    quantization_target_tokens_per_second: float = Field(
        default=0.0,
        ge=0,
        description="Decode speed of one job that auto's probe asks of a precision before it "
        "gives precision up for speed (60 is twice the 30 tokens/s alert); 0 (the default, "
        "until the probe is measured on a GPU) keeps the highest precision that fits.",
    )
    decode: Literal["auto", "eager", "static", "graph"] = Field(
        default="eager",
        description="Decode path of the generation loop: eager (a KV cache that grows each "
        "step), static (fixed slots, a preallocated KV cache and one fixed-shape step per "
        "batch size), graph (static, each step captured as a CUDA graph at start-up); auto is "
        "graph on CUDA and eager on CPU. Default eager until the graph path is measured on a "
        "GPU.",
    )
    static_max_tokens: int = Field(
        default=2048,
        ge=16,
        le=32768,
        description="Prompt plus new tokens one job may hold on the static and graph paths "
        "(the KV cache preallocates WORKER_MAX_CONCURRENCY times this); a longer job decodes "
        "on the eager path beside them.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "podpulse",
        description="Where the tiny model and other generated artefacts are kept.",
    )
    max_new_tokens: int = Field(
        default=1024,
        ge=1,
        le=32768,
        description="Largest max_new_tokens a job may ask for; larger requests are rejected.",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="How long an idle generation loop waits for companions of a first job.",
    )
    stall_timeout_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="Seconds one step of the generation loop (a forward pass) may run before the "
        "jobs waiting on it fail and RunPod is asked to replace the worker (a hung GPU would "
        "otherwise hold every job it is sent); 0 turns the watchdog off.",
    )
    kv_reserve_tokens: int = Field(
        default=8192,
        ge=0,
        description=(
            "KV-cache positions (all jobs together) WORKER_QUANTIZATION=auto keeps free; on the"
            " static and graph paths at least WORKER_MAX_CONCURRENCY x WORKER_STATIC_MAX_TOKENS,"
            " the cache they preallocate."
        ),
    )
    max_regenerations: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Retries with a new seed when validation fails; the best attempt is returned.",
    )
    regeneration_temperature: float = Field(
        default=0.7,
        gt=0,
        le=2,
        description="Temperature of a retry of a greedy job (a greedy retry would repeat itself).",
    )
    validation_min_words: int = Field(
        default=3,
        ge=0,
        description="Answers with fewer words fail the too_short check.",
    )
    validation_max_words: int = Field(
        default=800,
        ge=1,
        description="Answers with more words fail the too_long check.",
    )
    validation_ngram: int = Field(
        default=3,
        ge=1,
        le=16,
        description="Word n-gram size of the repetition check.",
    )
    validation_max_repeat_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Largest share of repeated n-grams an answer may have.",
    )
    validation_leak_words: int = Field(
        default=8,
        ge=2,
        description="A verbatim run this many words long from the system prompt or the "
        "user's message counts as a leak or an echo.",
    )
    log_content: bool = Field(
        default=False,
        description="Log prompt and answer text at debug level (off: career questions are "
        "personal data).",
    )
