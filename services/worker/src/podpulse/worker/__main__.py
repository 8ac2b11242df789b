"""``python -m podpulse.worker``: a RunPod serverless worker serving the model handler.

This is what RunPod's container runs; locally the twin runs it with
``podpulse twin serve --worker-command "python -m podpulse.worker"``. The runpod SDK reads
the platform's URLs and the worker's id from the environment; ``WORKER_JOB_LOOP`` picks
podpulse's job loop (``fast``, the default) or the SDK's stock one (``sdk``).
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
    """Build the settings once, load the model, then hand over to the runpod SDK."""
    settings, common, telemetry, process = settings_or_exit(
        "podpulse worker",
        lambda: (WorkerSettings(), CommonSettings(), TelemetrySettings(), WorkerProcessSettings()),
    )
    prepare_worker_process("podpulse-worker", common, telemetry, process)
    from . import handler  # late: torch and transformers cost seconds to import

    config = handler.runpod_config(settings)
    # Late: importing the SDK costs a second, and it reads its log level as it is imported.
    from podpulse.common.runpod_worker import serve

    serve(config, process.job_loop)


if __name__ == "__main__":
    main()
