"""A minimal podpulse Celery app for tests that run a real worker process on it, e.g.
``python -m celery -A bus_worker_app worker -Q tagger`` with this folder on PYTHONPATH.

Built by create_celery_app, as every service's app is (the tagger's queue; REDIS_URL and the
other settings from the environment). Its tasks write a file, so a test sees them run.
"""

from __future__ import annotations

import time
from pathlib import Path

from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings

TOUCH = "podpulse.tagger.test_touch"
HOLD = "podpulse.tagger.test_hold"

app = create_celery_app("tagger", CommonSettings())


# shared=False: a test process that imports this must not add these tasks to every app it
# builds later (Celery shares app.task registrations with all apps by default).
@app.task(name=TOUCH, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
def touch(path: str) -> None:
    """Write *path*: the worker ran a task."""
    Path(path).write_text("ran")


@app.task(name=HOLD, shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
def hold(path: str, seconds: float) -> None:
    """Write *path*, then take *seconds*: meanwhile the worker holds the task's message
    delivered and unacknowledged (task_acks_late)."""
    Path(path).write_text("started")
    time.sleep(seconds)
