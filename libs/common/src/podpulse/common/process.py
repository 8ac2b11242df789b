"""What every runpod SDK worker process podpulse starts does before handing over to the SDK.

Both worker entry points (``python -m podpulse.worker``, the model; ``python -m
podpulse.twin.worker``, the twin's stand-ins) build their settings with
:func:`settings_or_exit`, then call :func:`prepare_worker_process`: logging, telemetry, the
SDK's log level, and, under the twin, ending with the twin. They then hand their config to
:func:`podpulse.common.runpod_worker.serve` with ``WorkerProcessSettings.job_loop``.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings

from .logging import configure_logging
from .settings import CommonSettings, TelemetrySettings, describe_settings_error, env_settings
from .telemetry import configure_telemetry, shutdown_telemetry

__all__ = [
    "JobLoop",
    "WorkerProcessSettings",
    "exit_with_parent",
    "prepare_worker_process",
    "settings_or_exit",
]

T = TypeVar("T")

# Which job loop a worker runs (podpulse.common.runpod_worker.serve).
JobLoop = Literal["fast", "sdk"]

# Exit status for settings that do not validate, as for a command-line usage error.
SETTINGS_ERROR_EXIT = 2
_WATCH_INTERVAL_S = 0.5


class WorkerProcessSettings(BaseSettings):
    """How a worker process itself runs, whatever handler it serves."""

    model_config = env_settings("PODPULSE_")

    parent_pid: int | None = Field(
        default=None,
        description="Set by the twin for the workers it starts: a worker ends itself (and its "
        "process group) once that process is gone.",
    )
    runpod_log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = Field(
        default="INFO",
        validation_alias="RUNPOD_LOG_LEVEL",
        description="The runpod SDK's log level. Not DEBUG in production: at DEBUG the SDK "
        "prints every handler output, answers included, straight to stdout.",
    )
    job_loop: JobLoop = Field(
        default="fast",
        validation_alias="WORKER_JOB_LOOP",
        description="The worker's job loop: 'fast' (podpulse's: the next job is taken the "
        "moment a slot frees) or 'sdk' (the runpod SDK's stock loop, which sleeps 1 s when "
        "the worker is at its concurrency limit and looks for taken jobs every 100 ms).",
    )


def settings_or_exit(program: str, build: Callable[[], T]) -> T:
    """``build()``, or one line on stderr naming what is wrong (never a value) and exit 2.

    A bad ``REDIS_URL`` may hold a password, and pydantic's own message would print it.
    """
    try:
        return build()
    except ValidationError as exc:
        problems = describe_settings_error(exc)
        # print, not a logger: logging is configured from these very settings.
        print(f"{program}: invalid settings in the environment: {problems}", file=sys.stderr)  # noqa: T201
        raise SystemExit(SETTINGS_ERROR_EXIT) from None


def prepare_worker_process(
    service_name: str,
    common: CommonSettings,
    telemetry: TelemetrySettings,
    process: WorkerProcessSettings,
) -> None:
    """Logging, telemetry (flushed at exit), the SDK's log level, and the parent watch."""
    configure_logging(common)
    configure_telemetry(service_name, settings=telemetry)
    atexit.register(shutdown_telemetry)
    if process.parent_pid is not None:
        exit_with_parent(process.parent_pid)
    # The SDK reads its log level from the environment when it is imported, which the entry
    # point does after this; its default (DEBUG) would print every job's output.
    os.environ["RUNPOD_LOG_LEVEL"] = process.runpod_log_level


def exit_with_parent(parent_pid: int) -> None:
    """End this process's group once ``parent_pid`` is gone.

    Without this a worker outlives a twin killed hard, and the SDK's job-take loop, which
    retries connection errors without sleeping, spins a core forever. A worker the twin
    started directly watches its parent id change (reliable even while the dead twin is an
    unreaped zombie); one started through a wrapper (``uv run``, a shell) watches the pid.
    """
    direct = os.getppid() == parent_pid

    def alive() -> bool:
        if direct:
            return os.getppid() == parent_pid
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, under another user
            return True
        return True

    def watch() -> None:
        while alive():
            time.sleep(_WATCH_INTERVAL_S)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="podpulse-parent-watch", daemon=True).start()
