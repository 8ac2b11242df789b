"""The prober's settings: one typed object, built once at the entry point and passed down.

Every field reads ``PROBER_<FIELD>`` from the environment (``PROBER_SLO_TOTAL_P95_MS=6000``).
The endpoint itself (``RUNPOD_ENDPOINT_ID``, ``RUNPOD_ENDPOINT_BASE_URL``) and its key
(``RUNPOD_API_KEY``) are common settings and secrets, not the prober's; ``PROBER_TARGET`` says
whether the prober's Celery tasks probe that endpoint or a local twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from podpulse.common.settings import env_settings
from podpulse.common.summary import Slo

__all__ = ["ProberSettings"]


_SLO = Slo()


class ProberSettings(BaseSettings):
    """Where results go, what the SLO is, how requests are sent, and when probes run."""

    model_config = env_settings("PROBER_")

    # What the Celery tasks probe. The command line takes --target instead.
    target: Literal["hosted", "twin"] = Field(
        default="hosted",
        description="What scheduled and sent probe tasks run against: 'hosted' (the endpoint "
        "RUNPOD_ENDPOINT_ID names, with RUNPOD_API_KEY; a task fails when either is missing, "
        "it never falls back) or 'twin' (a local twin started for each run).",
    )

    # Results and inputs.
    results_dir: Path = Field(
        default=Path("results"), description="Runs are written to <results_dir>/<run_id>/."
    )
    prompts_path: Path | None = Field(
        default=None,
        description="JSONL prompt set (one {question, profile?, max_new_tokens?} per line); "
        "unset means the career questions shipped with podpulse.prober.",
    )

    # The SLO a load test must meet, all on successful requests; the numbers are the Slo
    # model's (podpulse.common.summary), declared once there.
    slo_exec_p50_ms: float = Field(
        default=_SLO.exec_p50_ms, gt=0, description="Execution time P50 limit."
    )
    slo_exec_p95_ms: float = Field(
        default=_SLO.exec_p95_ms, gt=0, description="Execution time P95 limit."
    )
    slo_total_p50_ms: float = Field(
        default=_SLO.total_p50_ms, gt=0, description="Total latency P50 limit."
    )
    slo_total_p95_ms: float = Field(
        default=_SLO.total_p95_ms, gt=0, description="Total latency P95 limit."
    )
    slo_success_pct: float = Field(
        default=_SLO.success_pct,
        ge=0,
        le=100,
        description="Lowest share of requests that must complete.",
    )

    # What a chat user feels; these lines appear only in runs that stream (--api stream or
    # openai). Their thresholds are also goodput's per-request targets (with total P95's).
    slo_ttft_p95_ms: float = Field(
        default=_SLO.ttft_p95_ms,
        gt=0,
        description="Time to first token P95 limit (streamed runs); also goodput's TTFT target.",
    )
    slo_itl_p95_ms: float = Field(
        default=_SLO.itl_p95_ms,
        gt=0,
        description="Inter-token latency P95 limit (streamed runs): the gaps between chunks.",
    )
    slo_tpot_p95_ms: float = Field(
        default=_SLO.tpot_p95_ms,
        gt=0,
        description="Time per output token P95 limit (streamed runs); also goodput's TPOT target.",
    )

    # Soak.
    soak_p95_ms: float = Field(
        default=4000, gt=0, description="Total-latency P95 every soak window must stay under."
    )
    soak_window_s: float = Field(
        default=60, gt=0, description="Length of a soak window for per-window statistics."
    )
    soak_concurrency: int = Field(default=2, ge=1, description="Concurrency of a soak.")
    soak_duration_s: float = Field(
        default=1800, gt=0, description="Default soak length (30 min; a soak should run 30 to 60)."
    )
    soak_min_change_pct: float = Field(
        default=10,
        ge=0,
        description="A trend counts as degradation only when the fitted change over the whole "
        "soak is at least this share of the mean window value (and its 95% CI excludes 0).",
    )

    # How each request is sent.
    api: Literal["runsync", "stream", "openai"] = Field(
        default="runsync",
        description="How each request is sent: 'runsync' (POST /runsync, whole answers), "
        "'stream' (POST /run with stream: true, then GET /stream until the job is final: "
        "TTFT, ITL and TPOT) or 'openai' (RunPod's OpenAI-compatible chat completions, "
        "streamed as server-sent events: TTFT, ITL and TPOT). --api sets it per run.",
    )
    timeout_s: float = Field(
        default=120, gt=0, description="Per-request client timeout, from the send to the result."
    )
    warmup: int = Field(
        default=2, ge=0, description="Requests sent first and left out of the statistics."
    )
    runsync_wait_ms: int = Field(
        default=90_000,
        ge=1000,
        le=300_000,
        description="?wait= of /runsync (RunPod accepts 1 s to 5 min); capped at the timeout.",
    )
    status_poll_ms: float = Field(
        default=50,
        gt=0,
        le=1000,
        description="Poll interval of /status for a job /runsync returned unfinished.",
    )
    rate_limit_retries: int = Field(
        default=5,
        ge=0,
        description="429 answers one request backs off from before it ends RATE_LIMITED.",
    )
    # The stop rule (podpulse.prober._stop): a run whose endpoint cannot be reached ends itself.
    abort_after_failures: int = Field(
        default=20,
        ge=0,
        description="A run ends (exit 3, the reason in summary.json's end_reason) after this "
        "many requests in a row failed to connect or got HTTP 5xx; 0: no bound by count. Each "
        "slot backs off (jittered exponential, 0.5 s doubling to 8 s) after such a failure.",
    )
    abort_after_s: float = Field(
        default=60,
        ge=0,
        description="A run also ends when such failures went on this long (seconds) without "
        "one success in between; 0: no bound by time.",
    )
    model_name: str | None = Field(
        default=None,
        description="gen_ai.request.model on spans when the endpoint's output names no model.",
    )

    # Schedules the prober's Celery beat runs.
    smoke_every_s: float = Field(
        default=900, gt=0, description="Seconds between scheduled smoke probes."
    )
    smoke_first_after_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after a beat starts before the first smoke probe, when the "
        "schedule is new in Redis (podpulse up sets 15); unset: one smoke interval.",
    )
    smoke_runs: int = Field(default=5, ge=1, description="Requests in one smoke probe.")
    smoke_concurrency: int = Field(default=1, ge=1, description="Concurrency of a smoke probe.")
    sweep_cron: str = Field(
        default="0 3 * * *",
        description="Crontab (minute hour day month weekday, UTC) of the scheduled sweep.",
    )
    soak_cron: str = Field(
        default="",
        description="Crontab (UTC) of a scheduled soak of the settings' duration, e.g. "
        "'0 2 * * *' nightly; with TAGGER_RELEASE_AUTO=true each passing one is released. "
        "Empty: no scheduled soak.",
    )
    # NoDecode: "1,2,3,4" from the environment, split by the validator below.
    sweep_levels: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(1, 2, 3, 4), description="Concurrency levels of the scheduled sweep."
    )
    sweep_runs: int = Field(default=30, ge=1, description="Requests per level of the sweep.")

    @field_validator("sweep_levels", mode="before")
    @classmethod
    def _split_levels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("sweep_levels")
    @classmethod
    def _positive_levels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(level < 1 for level in value):
            raise ValueError("sweep levels must be one or more concurrencies >= 1")
        return value

    @field_validator("sweep_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        return _cron(value)

    @field_validator("soak_cron")
    @classmethod
    def _five_fields_or_none(cls, value: str) -> str:
        return _cron(value) if value.strip() else ""


def _cron(value: str) -> str:
    if len(value.split()) != 5:
        raise ValueError(
            f"must have 5 fields (minute hour day month weekday), got {len(value.split())}"
        )
    return value
