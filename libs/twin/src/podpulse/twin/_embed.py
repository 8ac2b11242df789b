"""Start a twin with real SDK worker processes for tests, benchmarks and the demo."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.net import free_port

from ._app import serve_in_thread
from ._config import TwinConfig
from ._platform import Platform

T = TypeVar("T")

__all__ = ["RunningTwin", "running_twin", "wait_until"]


def wait_until(check: Callable[[], T | None], timeout_s: float = 30.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what or check}")
        time.sleep(0.05)


@dataclass
class RunningTwin:
    """A twin serving on loopback: where to reach it and its platform (read-only use)."""

    config: TwinConfig
    platform: Platform

    @property
    def base_url(self) -> str:
        """RUNPOD_ENDPOINT_BASE_URL for this twin, e.g. ``http://127.0.0.1:PORT/v2``."""
        return self.config.base_url

    @property
    def endpoint_id(self) -> str:
        """The endpoint id clients use."""
        return self.config.endpoint_id

    @property
    def api_key(self) -> str:
        """The bearer key clients send."""
        return self.config.api_key.get_secret_value()

    @property
    def endpoint_url(self) -> str:
        """``{base_url}/{endpoint_id}``."""
        return f"{self.base_url}/{self.endpoint_id}"

    def client(self, timeout_s: float = 60.0) -> httpx.Client:
        """A synchronous HTTP client speaking RunPod's public API to this twin."""
        return httpx.Client(
            base_url=self.endpoint_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=timeout_s,
        )

    def wait_ready(self, workers: int, timeout_s: float = 60.0) -> None:
        """Block until ``workers`` workers have asked for jobs (their SDK loop is up)."""
        wait_until(
            lambda: self.platform.queue.waiting_takers() >= workers,
            timeout_s,
            f"{workers} twin worker(s) to ask for jobs",
        )


@contextlib.contextmanager
def running_twin(
    handler: str = "calibrated",
    workers_min: int = 1,
    workers_max: int = 1,
    env: dict[str, str] | None = None,
    *,
    wait_ready: bool = True,
    scaler_type: str = "QUEUE_DELAY",
    scaler_value: float = 1,
    idle_timeout_s: int = 5,
    **twin_options: Any,
) -> Iterator[RunningTwin]:
    """Serve a twin on a free loopback port; stop it and its workers afterwards."""
    with tempfile.TemporaryDirectory(prefix="podpulse-twin-") as log_dir:
        config = TwinConfig(
            port=free_port(),
            handler=handler,
            worker_env=env or {},
            scaling=EndpointConfig(
                workers_min=workers_min,
                workers_max=workers_max,
                idle_timeout_s=idle_timeout_s,
                scaler_type=ScalerType(scaler_type),
                scaler_value=scaler_value,
            ),
            log_dir=Path(log_dir),
            **twin_options,
        )
        with serve_in_thread(config) as platform:
            twin = RunningTwin(config=config, platform=platform)
            if wait_ready and workers_min:
                twin.wait_ready(workers_min)
            yield twin
