"""podpulse's beat scheduler outlives a Redis restart, and still yields a lock it lost.

A real redis-server with its append-only file, stopped and started again on the same port, as
a restarted Redis (or ``podpulse up`` restarting its own) would be.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from redbeat.schedulers import RedBeatScheduler as PlainRedBeat
from redbeat.schedulers import acquire_distributed_beat_lock

from podpulse.common.beat import RETRY_S, RedBeatScheduler
from podpulse.common.bus import create_celery_app
from podpulse.common.redis_process import find_redis_server, redis_server_argv, wait_for_ping
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import free_port


class Server:
    """One redis-server on a fixed port and folder, which can be stopped and started."""

    def __init__(self, folder: Path) -> None:
        executable = find_redis_server()
        assert executable is not None, "redis-server is needed"
        self.argv = redis_server_argv(executable, free_port(), folder, folder / "log", persist=True)
        self.url = f"redis://127.0.0.1:{self.argv[2]}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv)
        problem = wait_for_ping(self.url, 10, process=self.process)
        assert not problem, problem

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()  # SIGTERM: Redis writes its append-only file, then exits
        self.process.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_a_tick_without_redis_waits_and_the_next_one_goes_on(server: Server) -> None:
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


def test_a_lock_another_beat_took_still_ends_this_one(server: Server) -> None:
    """Not a connection error: if the lock lapsed and another beat holds it, tick raises."""
    app = create_celery_app("prober", CommonSettings(redis_url=server.url))
    beat = RedBeatScheduler(app=app)
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=beat))
    redis.Redis.from_url(server.url).set(beat.lock_key, "another-beat")
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        beat.tick()
