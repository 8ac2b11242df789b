"""podpulse's Redis channel: closed on a lost connection, it closes for real.

celery 5.7's consumer, when the broker connection drops, collects the connection and then
closes it. Here that sequence runs against a real Redis that stopped while a channel waited on
BRPOP holding a message it had not acknowledged: kombu's own channel raises AttributeError
("'NoneType' object has no attribute 'hostname'") from the close, which ends a worker;
podpulse's closes, and the message stays Redis's to deliver again.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer
from kombu.transport import redis as kombu_redis

from podpulse.common import redis_transport
from podpulse.common.bus import create_celery_app
from podpulse.common.redis_transport import KOMBU_VERIFIED, kombu_drift
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import RestartableRedis


def test_the_kombu_and_celery_code_the_fix_relies_on_is_the_verified_code() -> None:
    """Fails after a kombu or celery upgrade changed what podpulse.common.redis_transport was
    verified against. Read the new code: when celery no longer closes a collected connection
    again, or kombu's Channel.close no longer stops on a failed BRPOP read, the fix may go; when
    it still applies, record the new digests in KOMBU_VERIFIED."""
    assert kombu_drift() == [], {name: KOMBU_VERIFIED[name] for name in kombu_drift()}


def test_every_podpulse_app_opens_podpulse_channels(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kombu_redis.Transport, "Channel", kombu_redis.Channel)  # kombu's own
    app = create_celery_app("tagger", CommonSettings(redis_url=redis_url))
    with app.connection_for_write() as connection:
        assert isinstance(connection.default_channel, redis_transport.Channel)


def test_a_channel_left_by_a_lost_connection_closes_and_keeps_its_message(
    tmp_path: Path,
) -> None:
    """Two channels, as a worker has: the task channel waits on BRPOP holding a message it has
    not acknowledged, another listens on a broadcast queue (as the worker's remote control
    does). Redis stops; the connection is collected, then closed, as celery's consumer does."""
    redis_transport.install()
    server = RestartableRedis(tmp_path)
    server.start()
    try:
        # A BRPOP that waits longer than the test, so its reply is still pending when Redis goes.
        connection = Connection(server.url, transport_options={"polling_interval": 30})
        tasks = connection.default_channel
        assert isinstance(tasks, redis_transport.Channel)
        Queue("tasks", routing_key="tasks")(tasks).declare()
        tasks.basic_publish(tasks.prepare_message("held"), "", "tasks")
        held = tasks.basic_get("tasks", no_ack=False)  # delivered, not acknowledged
        assert held is not None
        tasks.basic_consume("tasks", False, lambda message: None, "task-consumer")
        # Closing this one deletes its auto-delete queue, which fails with Redis gone and stops
        # kombu closing the connection's other channels.
        control = connection.channel()
        broadcast = Queue("control", Exchange("broadcast", type="fanout"), auto_delete=True)
        Consumer(control, [broadcast], callbacks=[lambda body, message: None]).consume()
        with contextlib.suppress(socket.timeout):
            connection.drain_events(timeout=0.05)  # sends the BRPOP, subscribes
        assert tasks._in_poll

        server.stop()
        # celery's Consumer.on_connection_error_after_connected: collect, then close. kombu's
        # own channel raises AttributeError from the close; celery ignores only connection
        # errors there, so the worker would exit.
        connection.collect(socket_timeout=5)
        connection.close()
        assert tasks.closed

        # Redis could not take the message back while it was down; it is still Redis's to
        # deliver again (after the visibility timeout), as when a worker dies.
        server.start()
        admin = redis.Redis.from_url(server.url)
        assert admin.hlen("unacked") == 1
        admin.close()
    finally:
        server.close()
