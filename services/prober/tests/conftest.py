"""Fixtures for the prober's tests: a real twin with real runpod SDK worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from podpulse.prober import Target
from podpulse.worker.twin.testing import running_twin


@pytest.fixture(scope="session")
def twin_target() -> Iterator[Target]:
    """Two warm calibrated workers (30 ms jobs, 8 at a time each), shared by the session.

    WORKER_MAX_CONCURRENCY is high so that the SDK's one-second sleep at its concurrency
    limit never shows up in these tests' timings.
    """
    env = {"CALIBRATED_EXEC_MS": "30", "WORKER_MAX_CONCURRENCY": "8"}
    with running_twin(workers_min=2, workers_max=2, env=env) as twin:
        yield Target(
            endpoint_id=twin.endpoint_id, base_url=twin.base_url, api_key=twin.api_key, kind="twin"
        )
