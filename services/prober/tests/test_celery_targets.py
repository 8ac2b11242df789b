"""Which target a task probes: a hosted one it is not given fails it, a twin target starts an
embedded twin; each on a real Celery worker (in a thread)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import task_failure
from celery_helpers import events, poll

from podpulse.common.settings import CommonSettings
from podpulse.common.summary import read_summary
from podpulse.prober import EmbeddedTwin, ProberSettings, TargetError
from podpulse.prober.app import create_app
from podpulse.twin import CalibratedSettings, TwinSettings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("task", "kwargs", "endpoint_id", "missing"),
    [
        ("podpulse.prober.smoke", {}, None, "RUNPOD_ENDPOINT_ID"),
        ("podpulse.prober.smoke", {}, "ep-configured", "RUNPOD_API_KEY"),
        ("podpulse.prober.load_sharded", {"shards": 2}, None, "RUNPOD_ENDPOINT_ID"),
    ],
)
def test_a_task_without_its_hosted_target_fails_and_publishes_nothing(  # noqa: PLR0917
    redis_url: str,
    empty_redis: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    kwargs: dict[str, Any],
    endpoint_id: str | None,
    missing: str,
) -> None:
    """PROBER_TARGET=hosted without an endpoint id or a key: a real worker's task fails naming
    what is missing, starts no twin, writes no results and publishes no event."""
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY_FILE", raising=False)
    results = tmp_path / "results"
    app = create_app(
        CommonSettings(redis_url=redis_url, runpod_endpoint_id=endpoint_id),
        ProberSettings(target="hosted", results_dir=results),
    )
    failures: list[BaseException] = []

    def on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        if exception is not None and sender is not None and sender.app is app:
            failures.append(exception)

    task_failure.connect(on_failure, weak=False)
    try:
        with start_worker(
            app, pool="solo", perform_ping_check=False, queues=["prober"], shutdown_timeout=10
        ):
            app.send_task(task, kwargs=kwargs, task_id=f"no-target-{time.time_ns()}")
            poll(lambda: failures, 30, "the task to fail")
    finally:
        task_failure.disconnect(on_failure)
    (error,) = failures
    assert isinstance(error, TargetError)
    assert missing in str(error)
    assert empty_redis.llen("alerter") == empty_redis.llen("tagger") == 0
    assert empty_redis.llen("prober") == 0  # a sharded run sent no shards either
    assert not results.exists()


def test_a_twin_target_task_probes_an_embedded_twin_and_says_so(
    redis_url: str, empty_redis: redis.Redis, tmp_path: Path
) -> None:
    """PROBER_TARGET=twin: a real worker's smoke starts its own twin, and the summary and the
    event both name the twin as the target."""
    app = create_app(
        CommonSettings(redis_url=redis_url, runpod_endpoint_id=None),
        ProberSettings(target="twin", results_dir=tmp_path / "results", smoke_runs=2, warmup=0),
        EmbeddedTwin(
            TwinSettings(workers_min=1, workers_max=1, worker_concurrency=4, stop_grace_s=0.3),
            CalibratedSettings(exec_ms=30, distribution="fixed"),
        ),
    )
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["prober"], shutdown_timeout=10
    ):
        app.send_task("podpulse.prober.smoke", task_id="twin-target")
        (event,) = poll(lambda: events(empty_redis), 60, "the smoke's event")
    assert (event.run_id, event.target_kind, event.slo_passed) == (
        "smoke-twin-target",
        "twin",
        True,
    )
    summary = read_summary(Path(event.results_path) / "summary.json")
    assert summary == event.summary
    assert summary.target.kind == "twin"
    assert summary.target.endpoint_id == event.endpoint_id
    assert summary.level.requests == 2
