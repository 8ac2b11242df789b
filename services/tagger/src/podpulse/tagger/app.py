"""The tagger's Celery app, built by a factory: ``create_app(common, release_settings)``.

Nothing happens at import; the worker starts through ``python -m podpulse.tagger worker``
(podpulse.tagger.__main__), which builds the settings once and hands the app to Celery.
"""

from __future__ import annotations

from celery import Celery

from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings

from . import tasks
from .settings import ReleaseSettings

__all__ = ["create_app"]


def create_app(common: CommonSettings, release: ReleaseSettings) -> Celery:
    """The tagger's Celery app (queue ``tagger``) with its task and settings."""
    app = create_celery_app("tagger", common)
    tasks.register(app, release, endpoint_api=common.runpod_endpoint_base_url)
    return app
