"""``python -m podpulse.twin.worker``: a runpod SDK worker serving the twin's handler.

``TWIN_HANDLER`` names it: ``calibrated`` (timing, errors and crashes on demand),
``calibrated-stream`` (a generator handler), or ``MODULE:FUNC``, any runpod handler function
(sync, async, or a generator, whose outputs stream). This is what the twin starts by default;
the runpod SDK reads the platform's URLs and the worker's id from the environment, and
``WORKER_JOB_LOOP`` (set from the twin's ``--job-loop``) picks the job loop.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from podpulse.common.process import (
    WorkerProcessSettings,
    prepare_worker_process,
    settings_or_exit,
)
from podpulse.common.settings import CommonSettings, TelemetrySettings

from .settings import CalibratedSettings, TwinSettings

__all__ = ["HandlerError", "load_handler", "main", "runpod_config"]


class HandlerError(ValueError):
    """``TWIN_HANDLER`` does not name a handler that can be served."""


def load_handler(spec: str) -> Callable[..., Any]:
    """Import the ``MODULE:FUNC`` handler ``spec`` names, or HandlerError saying why not."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(
            f"TWIN_HANDLER={spec!r}: expected 'calibrated', 'calibrated-stream' or MODULE:FUNC"
        )
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise HandlerError(f"TWIN_HANDLER={spec!r} cannot be loaded: {exc}") from None
    if not callable(target):
        raise HandlerError(f"TWIN_HANDLER={spec!r} is not callable")
    return target  # type: ignore[no-any-return]  # getattr on a module gives Any; callable() checked it


def runpod_config(twin: TwinSettings, calibrated: CalibratedSettings) -> dict[str, Any]:
    """The ``runpod.serverless.start`` config for ``twin.handler``."""
    from . import calibrated as stand_ins

    limit = twin.worker_concurrency

    def concurrency_modifier(_current: int) -> int:
        return limit

    handler: Callable[..., Any]
    if twin.handler == "calibrated":
        handler = stand_ins.make_handler(calibrated)
    elif twin.handler == "calibrated-stream":
        handler = stand_ins.make_stream_handler(calibrated)
    else:
        handler = load_handler(twin.handler)
    config: dict[str, Any] = {"handler": handler, "concurrency_modifier": concurrency_modifier}
    if inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(handler):
        # /status then carries every streamed output, as RunPod's aggregate does.
        config["return_aggregate_stream"] = True
    return config


def main() -> None:
    """Build the settings once, then hand over to the runpod SDK with the chosen job loop."""
    program = "podpulse twin worker"
    twin, calibrated, common, telemetry, process = settings_or_exit(
        program,
        lambda: (
            TwinSettings(),
            CalibratedSettings(),
            CommonSettings(),
            TelemetrySettings(),
            WorkerProcessSettings(),
        ),
    )
    prepare_worker_process("podpulse-twin-worker", common, telemetry, process)
    try:
        config = runpod_config(twin, calibrated)
    except HandlerError as exc:
        raise SystemExit(f"{program}: {exc}") from None
    # Late: importing the SDK costs a second, and it reads its log level as it is imported.
    from podpulse.common.runpod_worker import serve

    serve(config, process.job_loop)


if __name__ == "__main__":
    main()
