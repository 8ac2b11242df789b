"""Helpers for the prober's Celery tests on real processes: ``python -m podpulse.prober
worker|beat`` subprocesses, tasks sent by name, the events they publish, and a real subscriber.

Shared by test_celery_runs, test_celery_shards, test_celery_restart and test_celery_targets
(split so the test workers stay balanced); their fixtures (``empty_redis``, ``app_env``) are in
the conftest.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker

from podpulse.common.bus import create_celery_app
from podpulse.common.events import ProbeRunCompleted, parse_event
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import stop_process
from podpulse.prober import Target

# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """A celery subprocess and its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # Generous: it only keeps a process that never gets there from hanging the suite, and a
    # worker's start-up on a loaded two-core machine has taken over 30 s.
    def wait_for(self, needle: str, timeout_s: float = 120.0) -> None:
        poll(lambda: needle in self.text(), timeout_s, f"{needle!r} in {self.log.name}")


@contextmanager
def celery(*args: str, env: dict[str, str], log: Path) -> Iterator[Proc]:
    """`python -m podpulse.prober <args>`; SIGTERM (warm shutdown) when the block ends."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "podpulse.prober", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
        )  # fmt: skip
    proc = Proc(popen, log)
    try:
        yield proc
    finally:
        stop_process(popen, timeout_s=15)


def worker(env: dict[str, str], log: Path, name: str) -> AbstractContextManager[Proc]:
    return celery(
        "worker", "-Q", "prober", "-c", "1", "-P", "prefork", "-n", f"{name}@%h", "-l", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat", env=env, log=log,
    )  # fmt: skip


def beat(env: dict[str, str], log: Path) -> AbstractContextManager[Proc]:
    return celery("beat", "-l", "INFO", env=env, log=log)


def poll(check: Callable[[], object], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return result


def prober_env(redis_url: str, target: Target, results: Path, **extra: str) -> dict[str, str]:
    key = target.api_key if isinstance(target.api_key, str) else target.api_key()
    return (
        os.environ
        | {
            "REDIS_URL": redis_url,
            "RUNPOD_ENDPOINT_ID": target.endpoint_id,
            "RUNPOD_ENDPOINT_BASE_URL": target.base_url,
            "RUNPOD_API_KEY": key,
            "PROBER_RESULTS_DIR": str(results),
            "PROBER_WARMUP": "0",
            "PROBER_TIMEOUT_S": "30",
            "PROBER_SMOKE_EVERY_S": "3600",
            "OTEL_SDK_DISABLED": "true",
            "PODPULSE_LOG_FORMAT": "json",
            "PODPULSE_LOG_LEVEL": "INFO",
        }
        | extra
    )


def send(redis_url: str, name: str, task_id: str, **kwargs: Any) -> None:
    """Send a prober task by name, as the CLI or another service would."""
    sender = create_celery_app("prober", CommonSettings(redis_url=redis_url))
    with sender.connection_for_write() as conn:
        sender.send_task(name, kwargs=kwargs, task_id=task_id, connection=conn)


def events(client: redis.Redis, queue: str = "alerter") -> list[ProbeRunCompleted]:
    """ProbeRunCompleted events waiting on *queue* (nothing consumes it in these tests)."""
    events = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        event = parse_event(args[0])
        assert isinstance(event, ProbeRunCompleted)
        events.append(event)
    return events


# --- a subscriber ---------------------------------------------------------------------------


@dataclass
class Inbox:
    """What the subscriber received, and a condition to wait on it."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


@contextmanager
def subscriber(redis_url: str) -> Iterator[Inbox]:
    """A real worker (in a thread) consuming the alerter queue as its probe-run subscriber."""
    app = create_celery_app("alerter", CommonSettings(redis_url=redis_url))
    inbox = Inbox()

    @app.task(name="podpulse.alerter.on_probe_run", shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def on_probe_run(payload: dict[str, Any]) -> None:
        with inbox.changed:
            inbox.payloads.append(payload)
            inbox.changed.notify_all()

    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["alerter"], shutdown_timeout=10
    ):
        yield inbox
