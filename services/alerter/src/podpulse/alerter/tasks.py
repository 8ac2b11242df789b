"""The alerter's Celery tasks: thin; each runs one step of podpulse.alerter._pipeline.

On the ``alerter`` queue: ``evaluate`` (beat) and ``on_probe_run`` (the prober's
``ProbeRunCompleted``, a failing run notified). On ``notify``: ``deliver`` (beat),
``on_release`` (a ``ReleaseRecorded`` announced), and ``on_alert_state`` /
``on_endpoint_config``, acknowledged and logged: podpulse.common.events routes those events
here, and the alerts behind ``AlertStateChanged`` already went through the dispatcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from celery import Celery, Task

from ._context import context_of
from ._pipeline import Alerter

__all__ = ["DELIVER", "EVALUATE", "register"]

EVALUATE = "podpulse.alerter.evaluate"
ON_PROBE_RUN = "podpulse.alerter.on_probe_run"
DELIVER = "podpulse.notify.deliver"
ON_RELEASE = "podpulse.notify.on_release"
ON_ALERT_STATE = "podpulse.notify.on_alert_state"
ON_ENDPOINT_CONFIG = "podpulse.notify.on_endpoint_config"

T = TypeVar("T")


def _run(app: Celery, step: Callable[[Alerter], Awaitable[T]]) -> T:
    context = context_of(app)

    async def main() -> T:
        async with httpx.AsyncClient(timeout=context.settings.notify_timeout_s) as http:
            return await step(context.alerter(http))

    return asyncio.run(main())


def register(app: Celery) -> None:
    """Define the alerter's tasks on *app* (built by ``create_app``)."""

    @app.task(name=EVALUATE, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def evaluate(self: Task) -> dict[str, object]:
        """Evaluate every rule now and queue the due notifications."""

        async def step(alerter: Alerter) -> int | None:
            return alerter.evaluate(time.time())

        queued = _run(self.app, step)
        return {"queued": queued, "skipped": queued is None}

    @app.task(name=DELIVER, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def deliver(self: Task) -> dict[str, object]:
        """Try every due delivery in the outbox."""

        async def step(alerter: Alerter) -> int | None:
            return await alerter.deliver(time.time())

        sent = _run(self.app, step)
        return {"delivered": sent, "skipped": sent is None}

    def on_event(self: Task, payload: dict[str, Any]) -> dict[str, object]:
        """A bus event: a failing probe run notified, a release announced, others logged."""

        async def step(alerter: Alerter) -> str:
            return alerter.on_event(payload, time.time())

        return {"action": _run(self.app, step)}

    # One body for four events: Alerter.on_event tells them apart (and logs the last two).
    for name in (ON_PROBE_RUN, ON_RELEASE, ON_ALERT_STATE, ON_ENDPOINT_CONFIG):
        app.task(name=name, bind=True, shared=False)(on_event)
