"""A local twin of RunPod serverless: the public API, the worker-facing job API, the v2
management API and a scaler running real ``python -m podpulse.worker`` processes.

Clients and unmodified runpod SDK workers talk to it as to RunPod; see DESIGN.md.
"""

from ._app import create_app, serve, serve_in_thread
from ._config import DEFAULT_API_KEY, TwinConfig
from ._platform import Platform

__all__ = ["DEFAULT_API_KEY", "Platform", "TwinConfig", "create_app", "serve", "serve_in_thread"]
