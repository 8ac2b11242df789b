"""``python -m podpulse.worker``: a RunPod serverless worker serving the model handler.

This is what RunPod's container runs; locally the twin runs it with
``podpulse twin serve --worker-command "python -m podpulse.worker"``. The runpod SDK reads
the platform's URLs and the worker's id from the environment.
"""

from __future__ import annotations

from podpulse.common.process import (
    WorkerProcessSettings,
    prepare_worker_process,
    settings_or_exit,
)
from podpulse.common.settings import CommonSettings, TelemetrySettings

from .settings import WorkerSettings


def main() -> None:
    """Build the settings once, load the model, then hand over to the runpod SDK's loop."""
    settings, common, telemetry, process = settings_or_exit(
        "podpulse worker",
        lambda: (WorkerSettings(), CommonSettings(), TelemetrySettings(), WorkerProcessSettings()),
    )
    prepare_worker_process("podpulse-worker", common, telemetry, process)
    from . import handler  # late: torch and transformers cost seconds to import

    config = handler.runpod_config(settings)
    import runpod  # late: importing the SDK costs a second and needs no settings

    runpod.serverless.start(config)


if __name__ == "__main__":
    main()
