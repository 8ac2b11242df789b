"""Fixtures for the prober's tests: a real twin with real runpod SDK worker processes, the
command line run in-process, and the Celery tests' emptied Redis and process environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import redis
from celery_helpers import prober_env
from typer.testing import CliRunner, Result

from podpulse.common.cli import ENTRY_POINT_GROUP, build_app
from podpulse.prober import Target
from podpulse.twin import CalibratedSettings, TwinSettings, running_twin


@pytest.fixture(scope="session")
def twin_target() -> Iterator[Target]:
    """Two warm calibrated workers (30 ms jobs, 8 at a time each), shared by the session.

    The worker concurrency is high so that the SDK's one-second sleep at its concurrency
    limit never shows up in these tests' timings.
    """
    twin_settings = TwinSettings(
        workers_min=2, workers_max=2, worker_concurrency=8, stop_grace_s=0.3
    )
    calibrated = CalibratedSettings(exec_ms=30, distribution="fixed")
    with running_twin(twin_settings, calibrated) as twin:
        yield Target(
            endpoint_id=twin.endpoint_id, base_url=twin.base_url, api_key=twin.api_key, kind="twin"
        )


@pytest.fixture
def empty_redis(redis_client: redis.Redis) -> redis.Redis:
    """The file's Redis, emptied first: no queues, no redbeat lock and no run claims left by
    an earlier test."""
    redis_client.flushdb()
    return redis_client


@pytest.fixture
def app_env(redis_url: str, twin_target: Target, tmp_path: Path) -> dict[str, str]:
    """A prober worker's or beat's environment: the file's Redis, the session's twin."""
    return prober_env(redis_url, twin_target, tmp_path / "results")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    """Run `podpulse ...` in this process with a clean prober/RunPod environment."""
    for name in list(os.environ):
        if name.startswith(("RUNPOD_", "PROBER_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROBER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PROBER_WARMUP", "0")
    runner = CliRunner()
    app = build_app(entry_points(group=ENTRY_POINT_GROUP))

    def invoke(*args: str, **env: str) -> Result:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return invoke
