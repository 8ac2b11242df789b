"""The prober's Celery app: ``celery -A podpulse.prober.app worker|beat``.

Settings are built once, here, from the environment; tasks read them from this module. Beat
uses redbeat (configured by podpulse.common.bus): the schedule below is written to Redis when
a beat starts, and only the beat holding the redbeat lock fires it.

No result backend: a sharded run's shards hand their statistics over through a Redis hash
(podpulse.prober._shards), and nothing else waits on a task result.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from podpulse.common.bus import create_celery_app
from podpulse.common.logging import configure_logging
from podpulse.common.settings import CommonSettings
from podpulse.common.telemetry import init_after_fork

from ._schedule import beat_schedule
from .settings import ProberSettings

__all__ = ["SERVICE_NAME", "app", "common_settings", "detach_signals", "settings"]

SERVICE_NAME = "podpulse-prober"
# Ceiling on how often (seconds) a worker sweeps for messages whose visibility timeout ran out.
_MAX_RESTORE_INTERVAL_S = 10

common_settings = CommonSettings()
settings = ProberSettings()


def _build(common: CommonSettings, prober: ProberSettings) -> Celery:
    celery_app = create_celery_app("prober", common)
    vt = common.visibility_timeout_s
    celery_app.conf.update(
        include=["podpulse.prober.tasks"],
        beat_schedule=beat_schedule(
            smoke_every_s=prober.smoke_every_s, sweep_cron=prober.sweep_cron
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
    return celery_app


def _configure_logging(**_: Any) -> None:
    configure_logging(common_settings)


_LOGGING_UID = "podpulse-prober-logging"

app = _build(common_settings, settings)
# A receiver here stops Celery configuring logging itself: every line of the worker and beat
# (ours, Celery's, redis') goes through podpulse's redacting structlog pipeline.
setup_logging.connect(_configure_logging, weak=False, dispatch_uid=_LOGGING_UID)
_disconnect_telemetry = init_after_fork(app, SERVICE_NAME)


def detach_signals() -> None:
    """Disconnect the logging and telemetry receivers this module connected.

    Celery signals are process-wide: for a test process that imports this app and also runs
    other Celery workers, whose start-up would otherwise configure the prober's telemetry.
    """
    setup_logging.disconnect(dispatch_uid=_LOGGING_UID)
    _disconnect_telemetry()
