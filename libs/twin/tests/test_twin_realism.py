"""The twin's realism knobs on its real app, in-process: the public API a network away."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.testclient import TestClient
from twin_helpers import small

from podpulse.twin import create_app

KEY = "test-key"


def test_the_public_api_is_a_network_away(tmp_path: Path) -> None:
    """With TWIN_API_LATENCY_MS each public request waits it out twice (there and back),
    an error (a missing key) included, on the OpenAI route too."""
    latency_s = 0.15
    settings = small(workers_min=0, workers_max=1, api_key=KEY, cold_start_ms=3_600_000,
                     log_dir=tmp_path, api_latency_ms=latency_s * 1000)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for headers, expected in (({"Authorization": f"Bearer {KEY}"}, 200), ({}, 401)):
            started = time.monotonic()
            response = client.get(f"/v2/{settings.endpoint_id}/health", headers=headers)
            # A lower bound only: a slow machine can only add to it.
            assert time.monotonic() - started >= 2 * latency_s
            assert response.status_code == expected
        started = time.monotonic()
        response = client.get(f"/v2/{settings.endpoint_id}/openai/v1/models")
        assert time.monotonic() - started >= 2 * latency_s
        assert response.status_code == 401
