"""``python -m podpulse.worker``: a RunPod serverless worker serving the configured handler.

This is what RunPod's container runs and what the twin spawns; the runpod SDK reads the
platform URLs and the worker id from the environment.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import os
import signal
import threading
import time
from typing import Any

from podpulse.common.logging import configure_logging
from podpulse.common.settings import CommonSettings
from podpulse.common.telemetry import configure_telemetry, shutdown_telemetry

from .settings import WorkerSettings


def build_config(settings: WorkerSettings) -> dict[str, Any]:
    """The ``runpod.serverless.start`` config for ``settings.handler``."""
    if settings.handler == "calibrated":
        from . import calibrated

        return calibrated.runpod_config(settings)
    if settings.handler == "calibrated-stream":
        from . import calibrated

        return {
            "handler": calibrated.make_stream_handler(settings),
            "return_aggregate_stream": True,
            "concurrency_modifier": settings.concurrency_modifier(),
        }
    if settings.handler == "model":
        from . import handler

        config: dict[str, Any] = handler.runpod_config(settings)
        return config
    module_name, sep, attr = settings.handler.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(
            f"PODPULSE_HANDLER={settings.handler!r}: expected 'calibrated', 'model' or MODULE:FUNC"
        )
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"PODPULSE_HANDLER={settings.handler!r} cannot be loaded: {exc}") from None
    if not callable(target):
        raise SystemExit(f"PODPULSE_HANDLER={settings.handler!r} is not callable")
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        return {"handler": target, "return_aggregate_stream": True,
                "concurrency_modifier": settings.concurrency_modifier()}  # fmt: skip
    return {"handler": target, "concurrency_modifier": settings.concurrency_modifier()}


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker's process group when the twin that started it is gone.

    Without this a worker outlives a twin killed hard, and the SDK's job-take loop, which
    retries connection errors without sleeping, spins a core forever.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="podpulse-parent-watch", daemon=True).start()


def main() -> None:
    """Build the settings once, then hand over to the runpod SDK's worker loop."""
    settings = WorkerSettings()
    configure_logging(CommonSettings())
    configure_telemetry("podpulse-worker")
    atexit.register(shutdown_telemetry)
    if settings.parent_pid is not None:
        _exit_with_parent(settings.parent_pid)
    # The SDK reads its log level from the environment when it is imported.
    os.environ["RUNPOD_LOG_LEVEL"] = settings.runpod_log_level
    config = build_config(settings)
    import runpod  # late: importing the SDK costs a second and needs no settings

    runpod.serverless.start(config)


if __name__ == "__main__":
    main()
