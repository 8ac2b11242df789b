"""A local twin of RunPod serverless: the public job API, the worker-facing job API, the v2
management API, and a scaler running real runpod SDK worker processes.

Clients and unmodified runpod SDK workers talk to it as they would to RunPod. Other programs
embed one with :func:`running_twin`; ``podpulse twin serve`` runs one in the foreground.
"""

from ._app import create_app, serve, serve_in_thread
from ._embed import RunningTwin, running_twin
from ._platform import Platform
from .settings import DEFAULT_API_KEY, CalibratedSettings, TwinSettings, default_worker_command

__all__ = [
    "DEFAULT_API_KEY",
    "CalibratedSettings",
    "Platform",
    "RunningTwin",
    "TwinSettings",
    "create_app",
    "default_worker_command",
    "running_twin",
    "serve",
    "serve_in_thread",
]
