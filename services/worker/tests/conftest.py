"""Fixtures for the worker service's tests: twins with real runpod SDK worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from podpulse.worker.twin.testing import RunningTwin, running_twin


@pytest.fixture(scope="module")
def twin() -> Iterator[RunningTwin]:
    """Two warm calibrated workers (20 ms jobs, 4 at a time each)."""
    env = {"CALIBRATED_EXEC_MS": "20", "WORKER_MAX_CONCURRENCY": "4"}
    with running_twin(workers_min=2, workers_max=2, env=env) as running:
        yield running


@pytest.fixture
def api(twin: RunningTwin) -> Iterator[httpx.Client]:
    """A public-API client for the module's twin."""
    with twin.client() as client:
        yield client
