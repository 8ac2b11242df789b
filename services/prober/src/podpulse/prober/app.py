"""The prober's Celery app, built by a factory: ``create_app(common, prober)``.

Nothing happens at import: settings are built at the process's entry point and passed in, and
the app carries them to its tasks (podpulse.prober._context). Workers and beat start through
``python -m podpulse.prober worker|beat [celery options]`` (podpulse.prober.__main__), which
builds the settings once, wires logging and telemetry, and hands the app to Celery's command
line. ``celery -A podpulse.prober.app:create_app`` does not work: Celery 5's ``find_app``
returns the named attribute as it is, without calling it, and then uses it as the app.

Beat uses redbeat (configured by podpulse.common.bus): the schedule below is written to Redis
when a beat starts, and only the beat holding the redbeat lock fires it. No result backend: a
sharded run's shards hand their statistics over through a Redis hash
(podpulse.prober._sharded), and nothing else waits on a task result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from podpulse.common.bus import attach_context, create_celery_app
from podpulse.common.logging import configure_logging
from podpulse.common.settings import CommonSettings, TelemetrySettings
from podpulse.common.telemetry import init_after_fork

from . import tasks
from ._context import ProberContext
from ._schedule import beat_schedule
from ._target import EmbeddedTwin
from .settings import ProberSettings

__all__ = ["SERVICE_NAME", "connect_process_signals", "create_app"]

SERVICE_NAME = "podpulse-prober"
# Ceiling on how often (seconds) a worker sweeps for messages whose visibility timeout ran out.
_MAX_RESTORE_INTERVAL_S = 10
_LOGGING_UID = "podpulse-prober-logging"


def create_app(
    common: CommonSettings, prober: ProberSettings, twin: EmbeddedTwin | None = None
) -> Celery:
    """The prober's Celery app with its tasks, schedule and settings.

    The caller (an entry point, or a test) builds the settings; *twin* is what the twin
    target's runs start, and is needed only when ``prober.target`` is ``twin``.
    """
    if prober.target == "twin" and twin is None:
        raise ValueError("PROBER_TARGET=twin needs the twin's settings (an EmbeddedTwin)")
    celery_app = create_celery_app("prober", common)
    vt = common.visibility_timeout_s
    celery_app.conf.update(
        beat_schedule=beat_schedule(
            smoke_every_s=prober.smoke_every_s,
            sweep_cron=prober.sweep_cron,
            smoke_first_after_s=prober.smoke_first_after_s,
            soak_cron=prober.soak_cron,
        ),
        broker_transport_options={
            **celery_app.conf.broker_transport_options,
            # kombu sweeps expired unacked messages only every 10 s x 10 calls by default; a
            # worker that died mid-task would hold its message back for over 100 s. One sweep
            # is a single ZRANGE on the unacked index, so sweep on every call, at most every
            # 10 s (and within a visibility timeout when that is shorter, as in tests).
            "unacked_restore_interval": max(1, min(_MAX_RESTORE_INTERVAL_S, vt // 2)),
            "unacked_restore_throttle": 1,
        },
        # The bus default cancels acks_late tasks when the broker connection drops, because
        # their message will be delivered again. A probe run claims its run id in Redis
        # (podpulse.prober._locks), so that second delivery is skipped; cancelling instead
        # would throw away an hour's soak for a Redis blip. Rows go to disk, not to Redis, so
        # a run carries on through a broker restart and publishes its event once Redis is back.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    attach_context(celery_app, ProberContext.build(common, prober, twin))
    tasks.register(celery_app)
    return celery_app


def connect_process_signals(
    celery_app: Celery, common: CommonSettings, telemetry: TelemetrySettings
) -> Callable[[], None]:
    """Route this process's logging through podpulse's pipeline and set up telemetry per child.

    Celery signals are process-wide, so this belongs to the process that runs the worker or
    beat (``python -m podpulse.prober``), not to every app built. Returns a disconnect.
    """

    def _configure_logging(**_: Any) -> None:
        configure_logging(common)

    # A receiver here stops Celery configuring logging itself: every line of the worker and
    # beat (ours, Celery's, redis') goes through podpulse's redacting structlog pipeline.
    setup_logging.connect(_configure_logging, weak=False, dispatch_uid=_LOGGING_UID)
    disconnect_telemetry = init_after_fork(celery_app, SERVICE_NAME, settings=telemetry)

    def disconnect() -> None:
        setup_logging.disconnect(dispatch_uid=_LOGGING_UID)
        disconnect_telemetry()

    return disconnect
