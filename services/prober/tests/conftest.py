"""Fixtures for the prober's tests: a real twin with real runpod SDK worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
