"""The alerter's Celery app, built by a factory: ``create_app(common, alerter, rules)``.

The split alerter: ``python -m podpulse.alerter worker -Q alerter,notify`` runs the tasks
(podpulse.alerter.tasks), ``python -m podpulse.alerter beat`` schedules an evaluation every
``evaluation_interval`` on the ``alerter`` queue and a delivery pass every second on
``notify``; spans come in through ``podpulse alerter serve`` processes (or any process
serving ``create_ingest_app`` over a ``RedisWindowStore``). Every step is the serving
alerter's own (podpulse.alerter._pipeline), under the same Redis locks, so a worker and
``serve`` can share a Redis without evaluating or sending twice.

One beat: redbeat's lock, under a key prefix of the alerter's own, since the prober's beat
holds ``podpulse:redbeat:``'s (one lock per prefix: a shared prefix would leave one of the two
beats waiting for ever, and each would fire the other's schedule).
"""

from __future__ import annotations

import redis
from celery import Celery

from podpulse.common.bus import attach_context, create_celery_app
from podpulse.common.settings import CommonSettings

from . import tasks
from ._context import AlerterContext
from ._rules._model import RulesConfig
from .settings import AlerterSettings

__all__ = ["REDBEAT_PREFIX", "beat_schedule", "create_app"]

REDBEAT_PREFIX = "podpulse:redbeat:alerter:"
DELIVER_EVERY_S = 1.0


def beat_schedule(config: RulesConfig) -> dict[str, dict[str, object]]:
    """An evaluation every evaluation_interval, a delivery pass every second.

    Each message expires after its period: with the worker down, beat's ticks must not pile
    up into a burst of stale evaluations when it is back (one fresh one does the same work).
    """
    interval = config.evaluation_interval
    return {
        "alerter-evaluate": {
            "task": tasks.EVALUATE,
            "schedule": interval,
            "options": {"expires": max(1.0, interval)},
        },
        "alerter-deliver": {
            "task": tasks.DELIVER,
            "schedule": DELIVER_EVERY_S,
            "options": {"expires": 5 * DELIVER_EVERY_S},
        },
    }


def create_app(common: CommonSettings, settings: AlerterSettings, config: RulesConfig) -> Celery:
    """The alerter's Celery app (queues ``alerter`` and ``notify``) with tasks and schedule."""
    app = create_celery_app("alerter", common)
    app.conf.update(beat_schedule=beat_schedule(config), redbeat_key_prefix=REDBEAT_PREFIX)
    client = redis.Redis.from_url(common.redis_url, socket_timeout=10, socket_connect_timeout=5)
    attach_context(app, AlerterContext(settings, config, client))
    tasks.register(app)
    return app
