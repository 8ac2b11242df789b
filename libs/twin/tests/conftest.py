"""Fixtures for the twin's tests: a module's twin with real runpod SDK worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from twin_helpers import calibrated, small

from podpulse.twin import RunningTwin, running_twin


@pytest.fixture(scope="module")
def twin() -> Iterator[RunningTwin]:
    """Two warm calibrated workers (20 ms jobs, 4 at a time each)."""
    settings = small(workers_min=2, workers_max=2, worker_concurrency=4)
    with running_twin(settings, calibrated(exec_ms=20)) as running:
        yield running


@pytest.fixture
def api(twin: RunningTwin) -> Iterator[httpx.Client]:
    """A public-API client for the module's twin."""
    with twin.client() as client:
        yield client
