"""The Celery app every podpulse service builds: one Redis broker, one queue per service.

Task names carry their queue (``podpulse.<queue>.<task>``), so a publisher needs only a name to
reach a subscriber: no service imports another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from celery import Celery
from kombu.entity import Exchange, Queue

from podpulse.common import redis_transport
from podpulse.common.settings import CommonSettings

__all__ = [
    "BEAT_LOCK_TIMEOUT_S",
    "BEAT_MAX_LOOP_INTERVAL_S",
    "QUEUES",
    "attach_context",
    "context_of",
    "create_celery_app",
    "queue_for_task",
    "route_task",
]

QUEUES: tuple[str, ...] = ("prober", "alerter", "tagger", "notify")

# Beat wakes at least this often, and each wake renews its redbeat lock.
BEAT_MAX_LOOP_INTERVAL_S = 10
# A standby beat takes over this long after the active one died without releasing the lock.
# Several loop intervals, so a slow tick never lets the lock lapse under a live beat.
BEAT_LOCK_TIMEOUT_S = 6 * BEAT_MAX_LOOP_INTERVAL_S

_TASK_PREFIX = "podpulse."
# Where a service's app factory leaves what its tasks run with (settings, clients).
_CONTEXT_ATTRIBUTE = "podpulse_context"

C = TypeVar("C")


def queue_for_task(name: str) -> str:
    """The queue a task name belongs to: ``podpulse.notify.on_release`` -> ``notify``.

    Raises ValueError for a name outside the scheme, so a typo fails at the publisher
    rather than leaving a message on a queue no worker reads.
    """
    parts = name.split(".")
    if len(parts) >= 3 and name.startswith(_TASK_PREFIX) and parts[1] in QUEUES and parts[-1]:
        return parts[1]
    raise ValueError(
        f"task name {name!r} is not podpulse.<queue>.<task> with queue one of {', '.join(QUEUES)}"
    )


def route_task(
    name: str, args: Any, kwargs: Any, options: Mapping[str, Any], task: Any = None, **kw: Any
) -> dict[str, str] | None:
    """Celery router: ``podpulse.<queue>.*`` goes to ``<queue>``; other names are not ours."""
    try:
        return {"queue": queue_for_task(name)}
    except ValueError:
        # None lets Celery fall through to task_default_queue (celery.* built-ins, for one).
        return None


def _durable_queue(name: str) -> Queue:
    # Durable: on Redis the queue is a list that outlives workers either way, but the flag keeps
    # that promise should the broker become AMQP. One direct exchange per queue, so a routing
    # key can never fan one message out to two services.
    exchange = Exchange(name, type="direct", durable=True)  # type: ignore[no-untyped-call]  # kombu ships no type hints
    return Queue(name, exchange, routing_key=name, durable=True)  # type: ignore[no-untyped-call]  # kombu ships no type hints


def create_celery_app(service: str, settings: CommonSettings) -> Celery:
    """The Celery app for *service* (one of QUEUES), its default queue named after it."""
    if service not in QUEUES:
        raise ValueError(f"unknown service {service!r}: expected one of {', '.join(QUEUES)}")

    # kombu's Redis channel can be left half-closed by a lost connection, and a worker holding
    # an unacknowledged task then dies on Redis's restart; podpulse's channel closes for real
    # (podpulse.common.redis_transport says how). Before the app opens any connection.
    redis_transport.install()
    app = Celery(f"podpulse.{service}")
    transport_options = {
        # Redis re-delivers a task nobody acknowledged within this time. With acks_late a task
        # is acknowledged when it ends, so this must exceed the longest task (a 60-minute soak)
        # or a second worker starts the same soak while the first is still running it.
        "visibility_timeout": settings.visibility_timeout_s,
    }
    app.conf.update(
        broker_url=settings.redis_url,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # Events are fire-and-forget; nothing waits on a result, so no backend to fill.
        result_backend=None,
        task_ignore_result=True,
        # JSON only: a pickle message on a shared Redis would be code execution on the worker.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Acknowledge after the task ran, so a worker killed mid-task (OOM, deploy) loses nothing;
        # and hand the message back when the worker process dies, rather than dropping it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A message that cannot be acknowledged (connection lost) is re-delivered anyway;
        # running it on would duplicate the work. Celery 6 makes this the default.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # One message at a time per process: a long soak must not sit on others' messages.
        worker_prefetch_multiplier=1,
        task_queues=tuple(_durable_queue(name) for name in QUEUES),
        task_default_queue=service,
        task_default_exchange=service,
        task_default_routing_key=service,
        # A queue outside QUEUES is a typo; fail at send rather than create it silently.
        task_create_missing_queues=False,
        task_routes=(route_task,),
        # podpulse.common.logging owns the root logger; Celery's own handler would replace it.
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        # Exactly one beat: redbeat keeps the schedule in Redis behind a lock (its scheduler,
        # made to ride out a Redis restart: podpulse.common.beat).
        beat_scheduler="podpulse.common.beat:RedBeatScheduler",
        beat_max_loop_interval=BEAT_MAX_LOOP_INTERVAL_S,
        redbeat_redis_url=settings.redis_url,
        # Set explicitly: redbeat otherwise inherits broker_transport_options (and warns).
        redbeat_redis_options={},
        redbeat_key_prefix="podpulse:redbeat:",
        redbeat_lock_timeout=BEAT_LOCK_TIMEOUT_S,
    )
    return app


def attach_context(app: Celery, context: object) -> None:
    """Make *context* what the tasks bound to *app* run with.

    A task reads it from ``self.app`` rather than a module global, so two apps built with
    different settings in one process (tests) never see each other's.
    """
    setattr(app, _CONTEXT_ATTRIBUTE, context)


def context_of(app: Celery, kind: type[C]) -> C:
    """The *kind* of context the app's factory attached; TypeError for an app it did not build."""
    context = getattr(app, _CONTEXT_ATTRIBUTE, None)
    if not isinstance(context, kind):
        raise TypeError(
            f"Celery app {app.main!r} has no {kind.__name__}: build it with its service's "
            "create_app"
        )
    return context
