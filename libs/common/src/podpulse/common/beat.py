"""The beat scheduler every podpulse beat runs: redbeat's, riding out a Redis restart.

redbeat renews its lock at the start of every tick; with Redis gone for a moment (a restart,
a failover) that raises, and Celery beat exits on any exception from a tick. Here a tick that
cannot reach Redis is logged and tried again after a second, so a beat outlives a Redis
restart as the workers do. A lock that another beat took meanwhile (LockNotOwnedError, not
a connection error) still ends this one: two beats must never both send.
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from redbeat import RedBeatScheduler as _RedBeatScheduler

__all__ = ["RETRY_S", "RedBeatScheduler"]

RETRY_S = 1.0

_log = structlog.get_logger(__name__)


class RedBeatScheduler(_RedBeatScheduler):  # type: ignore[misc]  # redbeat is untyped
    """redbeat.RedBeatScheduler whose tick survives Redis being unreachable."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One tick of redbeat's; RETRY_S when Redis did not answer."""
        try:
            return float(super().tick(*args, **kwargs))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            _log.warning("beat.redis_unreachable", error=type(exc).__name__, retry_in_s=RETRY_S)
            return RETRY_S
