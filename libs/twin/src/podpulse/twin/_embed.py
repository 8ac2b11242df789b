"""A twin inside another program: served on a free loopback port for the length of a block.

The prober's embedded target, the demo, benchmarks and tests all start one this way, with
real runpod SDK worker processes behind it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from podpulse.common.net import free_port

from ._app import serve_in_thread
from ._platform import Platform
from ._workers import log_tail
from .settings import CalibratedSettings, TwinSettings

__all__ = ["RunningTwin", "running_twin"]

_READY_POLL_S = 0.02


@dataclass
class RunningTwin:
    """A twin serving on loopback: where to reach it, and its platform (read-only use)."""

    settings: TwinSettings
    platform: Platform

    @property
    def base_url(self) -> str:
        """RUNPOD_ENDPOINT_BASE_URL for this twin, e.g. ``http://127.0.0.1:PORT/v2``."""
        return self.settings.base_url

    @property
    def endpoint_id(self) -> str:
        """The endpoint id clients use."""
        return self.settings.endpoint_id

    @property
    def api_key(self) -> str:
        """The bearer key clients send."""
        return self.settings.api_key.get_secret_value()

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
        """Block until ``workers`` workers have asked for jobs (their SDK loop is up).

        TimeoutError after ``timeout_s``, naming where the workers' logs are.
        """
        deadline = time.monotonic() + timeout_s
        while self.platform.queue.waiting_takers() < workers:
            failure = self.platform.last_start_failure
            if self.platform.failed_starts >= _FAILED_STARTS and failure is not None:
                # The same fault twice (a handler that cannot load, a command that is not
                # there): waiting out the timeout would only hide it.
                raise TimeoutError(f"twin workers fail to start: {failure}")
            if time.monotonic() > deadline:
                # Their last lines too: an embedded twin's log folder goes with it. A copy of
                # the records: the twin's own thread adds and removes them.
                tails = [
                    f"{record.id}: {tail}"
                    for record in list(self.platform.pool.workers.values())
                    if (tail := log_tail(record.log_path, lines=2))
                ]
                raise TimeoutError(
                    f"{workers} twin worker(s) did not ask for jobs within {timeout_s:g} s; "
                    f"their logs are in {self.settings.log_dir}"
                    + (f"; last lines: {'; '.join(tails)}" if tails else "")
                )
            time.sleep(_READY_POLL_S)


# Workers in a row that died before asking for work, after which waiting for one stops.
_FAILED_STARTS = 2


@contextlib.contextmanager
def running_twin(
    settings: TwinSettings,
    calibrated: CalibratedSettings | None = None,
    *,
    worker_env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    ready_timeout_s: float = 60.0,
    **overrides: Any,
) -> Iterator[RunningTwin]:
    """Serve a twin on a free loopback port; stop it and its workers when the block ends.

    ``settings`` describe the endpoint; keyword ``overrides`` replace some of its fields
    (``workers_min=1``), validated as the settings are. The port is always a free one and the
    workers' logs go to a temporary folder removed afterwards. ``calibrated``, when given, is
    what the calibrated handler runs with; ``worker_env`` adds environment for every worker
    (another worker command's own settings). With ``wait_ready``, the block starts once
    workersMin workers are asking for jobs.
    """
    with tempfile.TemporaryDirectory(prefix="podpulse-twin-") as log_dir:
        chosen = TwinSettings(
            **{**dict(settings), **overrides, "port": free_port(), "log_dir": Path(log_dir)}
        )
        env = {**(calibrated.worker_env() if calibrated is not None else {}), **(worker_env or {})}
        with serve_in_thread(chosen, worker_env=env) as platform:
            twin = RunningTwin(settings=chosen, platform=platform)
            if wait_ready and chosen.workers_min:
                twin.wait_ready(chosen.workers_min, ready_timeout_s)
            yield twin
