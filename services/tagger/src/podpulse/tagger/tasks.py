"""The tagger's Celery task: thin, it parses the event and hands it to auto-release
(podpulse.tagger.releases._auto), the only product with a task.

``register(app)`` binds it to an app built by ``create_app``, which carries the settings.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery, Task

from podpulse.common.bus import attach_context, context_of
from podpulse.common.events import EventError, ProbeRunCompleted, parse_event

from .releases._auto import on_probe_run_completed
from .settings import ReleaseSettings

__all__ = ["ON_PROBE_RUN", "register", "settings_of"]

ON_PROBE_RUN = "podpulse.tagger.on_probe_run"

_log = structlog.get_logger(__name__)


def settings_of(app: Celery) -> ReleaseSettings:
    """The release settings ``create_app`` attached; TypeError for an app it did not build."""
    return context_of(app, ReleaseSettings)


def register(app: Celery, settings: ReleaseSettings, *, endpoint_api: str) -> None:
    """Attach *settings* to *app* and define the tagger's tasks on it; *endpoint_api* is where
    the deployment's endpoint answers (RUNPOD_ENDPOINT_BASE_URL), which evidence must match."""
    attach_context(app, settings)

    @app.task(name=ON_PROBE_RUN, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def on_probe_run(self: Task, payload: dict[str, Any]) -> dict[str, object]:
        """A probe run completed: release when it is a passing soak and auto-release is on."""
        try:
            event = parse_event(payload)
        except EventError as exc:
            # A malformed event is dropped: redelivering it would fail the same way.
            _log.error("tagger_event_invalid", reason=str(exc))
            return {"action": "invalid"}
        if not isinstance(event, ProbeRunCompleted):
            return {"action": "ignored", "reason": f"not a probe run: {event.type}"}
        done = on_probe_run_completed(
            self.app, settings_of(self.app), event, endpoint_api=endpoint_api
        )
        return {"action": done.action, "reason": done.reason, "tag": done.tag}
