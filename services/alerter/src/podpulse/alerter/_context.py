"""What the alerter's Celery tasks share in one app, apart from the app and the tasks.

``app.create_app`` builds an :class:`AlerterContext` and attaches it
(``podpulse.common.bus.attach_context``); each task finds it with :func:`context_of`. Both
modules import this one and neither imports the other, so registering the tasks is a plain
call from the app's factory, with no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import redis
from celery import Celery

from podpulse.common import bus

from ._notify._outbox import DeliveryMetrics
from ._pipeline import Alerter, configured_receivers
from ._rules._evaluator import EvaluatorMetrics
from ._rules._model import RulesConfig
from .settings import AlerterSettings

__all__ = ["AlerterContext", "context_of"]


@dataclass(frozen=True)
class AlerterContext:
    """What the tasks of one app share: settings, rules, one Redis client, the counters."""

    settings: AlerterSettings
    config: RulesConfig
    client: redis.Redis
    evaluator_metrics: EvaluatorMetrics = field(default_factory=EvaluatorMetrics)
    delivery_metrics: DeliveryMetrics = field(default_factory=DeliveryMetrics)

    def alerter(self, http: httpx.AsyncClient) -> Alerter:
        """The parts, delivering through *http* (one client per task run: its own loop)."""
        receivers = configured_receivers(self.settings, http)
        return Alerter.build(
            self.client,
            self.settings,
            self.config,
            receivers,
            evaluator_metrics=self.evaluator_metrics,
            delivery_metrics=self.delivery_metrics,
        )


def context_of(app: Celery) -> AlerterContext:
    """The context ``create_app`` attached; TypeError for an app it did not build."""
    return bus.context_of(app, AlerterContext)
