"""Publishing a release's event, bounded: with Redis down the release itself is not lost.

The tag and the record are the release; ``release_recorded`` only tells the notifier. So a
bus that stays unreachable through a few retries is reported (the caller says so on stderr
or in the log) and the release stands.
"""

from __future__ import annotations

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from podpulse.common.events import publish
from podpulse.common.retry import Retry

from ._records import ReleaseRecord
from ._release import release_event

__all__ = ["BUS_ERRORS", "CLI_PUBLISH_DELAYS_S", "TASK_PUBLISH_DELAYS_S", "publish_release"]

BUS_ERRORS: tuple[type[BaseException], ...] = (OperationalError, redis.RedisError, OSError)
# A person at a terminal waits a few seconds at most; a worker rides out half a minute.
CLI_PUBLISH_DELAYS_S: tuple[float, ...] = (0.5, 1.0)
TASK_PUBLISH_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def publish_release(app: Celery, record: ReleaseRecord, delays_s: tuple[float, ...]) -> str | None:
    """Publish *record*'s ReleaseRecorded; None once sent, else why it could not be."""
    event = release_event(record)
    try:
        Retry.after(delays_s, on=BUS_ERRORS).call(lambda: publish(app, event))
    except BUS_ERRORS as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return None
