"""The Celery app factory and publish(), against a real Redis and a real Celery worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock
from summary_examples import load_summary

from podpulse.common.bus import (
    BEAT_LOCK_TIMEOUT_S,
    QUEUES,
    create_celery_app,
    queue_for_task,
    route_task,
)
from podpulse.common.events import ProbeRunCompleted, ReleaseRecorded, parse_event, publish
from podpulse.common.settings import CommonSettings

_SUBSCRIBERS = (
    "podpulse.alerter.on_probe_run",
    "podpulse.tagger.on_probe_run",
    "podpulse.notify.on_release",
)


@dataclass
class _Inbox:
    """What the worker's subscriber tasks received: (task name, queue, task id, payload)."""

    items: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, item: tuple[str, str, str, dict[str, Any]]) -> None:
        with self.changed:
            self.items.append(item)
            self.changed.notify_all()

    def wait_for(
        self, count: int, timeout: float = 10.0
    ) -> list[tuple[str, str, str, dict[str, Any]]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)


@pytest.fixture
def settings(redis_url: str) -> CommonSettings:
    return CommonSettings(redis_url=redis_url)


@pytest.fixture(scope="module")
def worker_app(redis_url: str) -> Iterator[tuple[Celery, _Inbox]]:
    """One real solo-pool worker for the module, consuming every podpulse queue."""
    redis.Redis.from_url(redis_url).flushdb()
    app = create_celery_app("notify", CommonSettings(redis_url=redis_url))
    inbox = _Inbox()

    def subscriber(name: str) -> None:
        @app.task(name=name, bind=True, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
        def receive(self: Any, payload: dict[str, Any]) -> None:
            routing_key = self.request.delivery_info["routing_key"]
            inbox.add((self.name, routing_key, self.request.id, payload))

    for name in _SUBSCRIBERS:
        subscriber(name)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield app, inbox


@pytest.fixture
def inbox(worker_app: tuple[Celery, _Inbox]) -> _Inbox:
    _, box = worker_app
    with box.changed:
        box.items.clear()
    return box


def _release() -> ReleaseRecorded:
    return ReleaseRecorded(
        tag="v1.0-production",
        commit="0123456789abcdef0123456789abcdef01234567",
        endpoint_id="ep-canary",
        image="runpod/pytorch:2.1.1-py3.10-cuda12.1.1-devel-ubuntu22.04",
        model="Puneetrinity/qwen2-7b-career",
        gpu="NVIDIA GeForce RTX 4090",
        recorded_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_config_carries_the_bus_guarantees(settings: CommonSettings) -> None:
    """JSON only, late acks, reject on lost worker, prefetch 1, long visibility, no backend."""
    conf = create_celery_app("prober", settings).conf
    assert conf.broker_url == settings.redis_url
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json",) * 3
    assert list(conf.accept_content) == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 7200}
    assert conf.result_backend is None
    assert conf.task_default_queue == "prober"
    assert [(q.name, q.durable, q.routing_key) for q in conf.task_queues] == [
        (name, True, name) for name in QUEUES
    ]
    assert conf.beat_scheduler == "podpulse.common.beat:RedBeatScheduler"
    assert conf.redbeat_redis_url == settings.redis_url


def test_visibility_timeout_reaches_the_redis_channel(settings: CommonSettings) -> None:
    """The Redis transport itself uses the configured visibility timeout, not kombu's hour."""
    app = create_celery_app("prober", settings.model_copy(update={"visibility_timeout_s": 5400}))
    with app.connection() as conn:
        assert conn.default_channel.visibility_timeout == 5400


def test_router_sends_each_name_to_its_queue() -> None:
    """podpulse.<queue>.* routes to <queue>; foreign names fall through to the default."""
    for queue in QUEUES:
        assert route_task(f"podpulse.{queue}.anything", (), {}, {}) == {"queue": queue}
    assert route_task("celery.ping", (), {}, {}) is None
    assert route_task("podpulse.worker.run", (), {}, {}) is None


@pytest.mark.parametrize(
    "name", ["podpulse.prober", "podpulse.nope.x", "other.prober.x", "podpulse.tagger."]
)
def test_queue_for_task_rejects_names_outside_the_scheme(name: str) -> None:
    """A misspelt subscriber name fails at the publisher, naming the scheme."""
    with pytest.raises(ValueError, match=r"podpulse\.<queue>\.<task>"):
        queue_for_task(name)


def test_unknown_service_is_rejected(settings: CommonSettings) -> None:
    """create_celery_app refuses a service with no queue of its own."""
    with pytest.raises(ValueError, match="unknown service 'probe'"):
        create_celery_app("probe", settings)


def test_publish_delivers_exact_payload_to_the_subscriber(
    worker_app: tuple[Celery, _Inbox], inbox: _Inbox
) -> None:
    """A published release reaches podpulse.notify.on_release on the notify queue, byte-exact."""
    app, _ = worker_app
    event = _release()
    ids = publish(app, event)
    ((name, queue, task_id, payload),) = inbox.wait_for(1)
    assert (name, queue, [task_id]) == ("podpulse.notify.on_release", "notify", ids)
    assert payload == event.model_dump(mode="json")
    assert parse_event(payload) == event


def test_probe_run_fans_out_to_every_subscriber_queue(
    worker_app: tuple[Celery, _Inbox], inbox: _Inbox
) -> None:
    """One probe-run event reaches both the alerter's and the tagger's task, each on its queue."""
    app, _ = worker_app
    event = ProbeRunCompleted.of(load_summary("run-1"), results_path="results/run-1")
    ids = publish(app, event)
    received = sorted(inbox.wait_for(2))
    assert [(name, queue) for name, queue, _, _ in received] == [
        ("podpulse.alerter.on_probe_run", "alerter"),
        ("podpulse.tagger.on_probe_run", "tagger"),
    ]
    assert sorted(task_id for _, _, task_id, _ in received) == sorted(ids)
    assert all(payload == event.model_dump(mode="json") for *_, payload in received)


def test_pickle_message_is_refused(
    worker_app: tuple[Celery, _Inbox], inbox: _Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A pickle-serialised message is refused unrun; the JSON one sent after it runs."""
    app, _ = worker_app
    pickled = app.send_task(
        "podpulse.notify.on_release", args=[{"via": "pickle"}], queue="notify", serializer="pickle"
    )
    app.send_task("podpulse.notify.on_release", args=[{"via": "json"}], queue="notify")
    # The solo worker takes one message at a time, in order: once the JSON one has run, the
    # pickle one was already handled, so a second arrival would be in the inbox by now.
    received = inbox.wait_for(1)
    assert [payload for *_, payload in received] == [{"via": "json"}]
    assert pickled.id not in [task_id for _, _, task_id, _ in received]
    assert "Refusing to deserialize untrusted content of type pickle" in caplog.text


def test_sending_to_a_queue_outside_queues_fails(settings: CommonSettings) -> None:
    """With task_create_missing_queues off, a typo'd queue is an error at send time."""
    app = create_celery_app("prober", settings)
    with pytest.raises(KeyError):
        app.send_task("podpulse.prober.x", queue="probr")


def test_only_one_beat_holds_the_redbeat_lock(settings: CommonSettings) -> None:
    """A second beat cannot take the redbeat lock while the first holds it, and it expires."""
    app = create_celery_app("prober", settings)
    first = RedBeatScheduler(app=app)
    assert (first.lock_key, first.lock_timeout) == ("podpulse:redbeat::lock", BEAT_LOCK_TIMEOUT_S)
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=first))
    try:
        client = redis.Redis.from_url(settings.redis_url)
        assert 0 < client.ttl(first.lock_key) <= BEAT_LOCK_TIMEOUT_S
        second = client.lock(first.lock_key, timeout=BEAT_LOCK_TIMEOUT_S)
        assert second.acquire(blocking=False) is False
    finally:
        first.lock.release()
