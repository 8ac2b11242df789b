"""What the prober's tasks run with: the settings and Redis client of the app they are bound to.

``create_app`` builds one :class:`ProberContext` from the settings it is given and attaches it
to the Celery app (podpulse.common.bus.attach_context); a task reads it with :func:`context_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from podpulse.common import bus
from podpulse.common.retry import Retry
from podpulse.common.settings import CommonSettings

from ._target import EmbeddedTwin
from .settings import ProberSettings

__all__ = ["BUS_ERRORS", "PUBLISH_DELAYS_S", "ProberContext", "context_of"]

# Waits between attempts to reach the bus: about half a minute of Redis outage is ridden out.
PUBLISH_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
BUS_ERRORS: tuple[type[BaseException], ...] = (OperationalError, redis.RedisError, OSError)


@dataclass(frozen=True)
class ProberContext:
    """Settings, the Redis client for run claims and the shard board, and the bus retry."""

    common: CommonSettings
    settings: ProberSettings
    # One client per app. redis-py's pool notices a fork (it checks the pid) and opens new
    # connections in the child, so prefork children can share the object safely.
    redis: redis.Redis
    bus_retry: Retry
    # The twin target's twin; None when the app probes a hosted endpoint.
    twin: EmbeddedTwin | None = None

    @classmethod
    def build(
        cls, common: CommonSettings, settings: ProberSettings, twin: EmbeddedTwin | None = None
    ) -> ProberContext:
        """The context of an app with these settings (the client connects on first use)."""
        client = redis.Redis.from_url(common.redis_url, socket_timeout=10, socket_connect_timeout=5)
        return cls(
            common=common,
            settings=settings,
            redis=client,
            bus_retry=Retry.after(PUBLISH_DELAYS_S, on=BUS_ERRORS),
            twin=twin,
        )


def context_of(app: Celery) -> ProberContext:
    """The context ``create_app`` attached; TypeError for an app it did not build."""
    return bus.context_of(app, ProberContext)
