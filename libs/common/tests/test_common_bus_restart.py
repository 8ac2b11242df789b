"""A podpulse Celery worker outlives Redis restarts while it holds an unacknowledged task.

A real redis-server, restarted three times (SIGTERM, then started again on its port and folder,
as ``podpulse up`` restarts its own), and a real worker process on an app built by
create_celery_app, run as ``podpulse up`` runs the tagger's and the alerter's (prefork, with
gossip, mingle and heartbeats). Before each restart the worker is running a task, so the task's
message is delivered and not yet acknowledged (task_acks_late), as when an event arrives just
before Redis goes. With kombu 5.7's own Redis channel the worker died at the first such restart,
"Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")"
(podpulse.common.redis_transport says why).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bus_worker_app import HOLD, TOUCH

from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import RestartableRedis, stop_process, wait_until

pytestmark = pytest.mark.slow

RESTARTS = 3
HOLD_S = 30  # longer than a restart takes; the worker cancels the task when Redis goes


class Worker:
    """The worker process and its log."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        """Running, and not on its way out: after "Unrecoverable error" Celery shuts the worker
        down, which waits for the task still running."""
        return self.popen.poll() is None and "Unrecoverable error" not in self.text()

    def wait_for(self, check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        """Until *check* holds; fails at once, with the log, should the worker die meanwhile."""

        def alive_and() -> bool:
            assert self.alive(), f"the worker died, before {what}:\n{self.text()}"
            return check()

        wait_until(alive_and, timeout_s=timeout_s, what=what, poll_s=0.05)

    def logged(self, text: str, times: int = 1) -> Callable[[], bool]:
        """A check: *text* is in the log at least *times* times."""
        return lambda: self.text().count(text) >= times


@contextmanager
def worker(redis_url: str, folder: Path) -> Iterator[Worker]:
    """``celery -A bus_worker_app worker`` on the tagger's queue; warm shutdown at the end."""
    # This folder on the path, for bus_worker_app.
    path = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = os.environ | {
        "REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join(path),
        "PYTHONUNBUFFERED": "1",
    }
    log = folder / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "bus_worker_app", "worker", "-Q", "tagger",
            "-c", "2", "-l", "INFO", "-n", "restart@%h"]  # fmt: skip
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        yield Worker(popen, log)
    finally:
        stop_process(popen, timeout_s=20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    running = RestartableRedis(folder)
    running.start()
    try:
        yield running
    finally:
        running.close()


def test_a_worker_holding_a_task_outlives_redis_restarts(
    server: RestartableRedis, tmp_path: Path
) -> None:
    """Three restarts, each while a task runs: the worker reconnects every time, never exits,
    and runs a task afterwards."""
    app = create_celery_app("tagger", CommonSettings(redis_url=server.url))
    with worker(server.url, tmp_path) as proc:
        proc.wait_for(proc.logged(" ready."), what="the worker ready")
        for restart in range(1, RESTARTS + 1):
            started = tmp_path / f"hold-{restart}"
            app.send_task(HOLD, args=[str(started), HOLD_S])
            proc.wait_for(started.exists, what=f"task {restart} running")
            server.restart()
            # Connected once at the start, then once after each restart.
            proc.wait_for(
                proc.logged("Connected to redis://", times=restart + 1),
                what=f"the worker connected again after restart {restart}",
            )
        ran = tmp_path / "after-restarts"
        app.send_task(TOUCH, args=[str(ran)])
        proc.wait_for(ran.exists, what="a task run after the restarts")
    assert "Unrecoverable error" not in proc.text(), proc.text()
