"""podpulse's beat scheduler outlives a Redis restart, and still yields a lock it lost.

A real redis-server with its append-only file, stopped and started again on the same port, as
a restarted Redis (or ``podpulse up`` restarting its own) would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from redbeat.schedulers import RedBeatScheduler as PlainRedBeat
from redbeat.schedulers import acquire_distributed_beat_lock

from podpulse.common.beat import RETRY_S, RedBeatScheduler
from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import RestartableRedis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableRedis]:
    running = RestartableRedis(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.close()


def test_a_tick_without_redis_waits_and_the_next_one_goes_on(server: RestartableRedis) -> None:
    """Redis down: redbeat's own tick raises (beat would exit), podpulse's returns RETRY_S.
    Redis back with the lock in its file: the next tick renews the lock and goes on."""
    app = create_celery_app("prober", CommonSettings(redis_url=server.url))
    beat = RedBeatScheduler(app=app)
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=beat))
    assert beat.tick() > 0
    server.stop()
    with pytest.raises(redis.ConnectionError):
        PlainRedBeat.tick(beat)
    assert beat.tick() == RETRY_S
    server.start()
    assert beat.tick() != RETRY_S
    assert beat.lock.owned()


def test_a_lock_another_beat_took_still_ends_this_one(server: RestartableRedis) -> None:
    """Not a connection error: if the lock lapsed and another beat holds it, tick raises."""
    app = create_celery_app("prober", CommonSettings(redis_url=server.url))
    beat = RedBeatScheduler(app=app)
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=beat))
    redis.Redis.from_url(server.url).set(beat.lock_key, "another-beat")
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        beat.tick()
