"""What the prober sends requests to: the hosted endpoint, or an embedded twin.

Hosted when ``RUNPOD_ENDPOINT_ID`` is set (its key from ``RUNPOD_API_KEY`` or
``RUNPOD_API_KEY_FILE``, re-read on every request); otherwise a local twin is started for the
run, with real runpod SDK worker processes running the calibrated handler between RunPod's
recommended 2 and 5 workers, and stopped afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Literal

import httpx

from podpulse.common.runpod import ApiKey, RunPodClient
from podpulse.common.settings import RUNPOD_API_KEY, CommonSettings, SecretError

from ._transport import AiohttpTransport
from .settings import ProberSettings

__all__ = ["Target", "TargetError", "embedded_twin", "hosted_target", "resolve_target"]


class TargetError(RuntimeError):
    """No usable endpoint: the message says what is missing."""


@dataclass(frozen=True)
class Target:
    """An endpoint to probe: enough to build a ``RunPodClient``."""

    endpoint_id: str
    base_url: str
    api_key: ApiKey = field(repr=False)
    kind: Literal["hosted", "twin"] = "hosted"

    @contextlib.asynccontextmanager
    async def client(
        self, *, timeout_s: float, max_connections: int | None = None
    ) -> AsyncIterator[RunPodClient]:
        """A client for one run: one pooled connection per request in flight, no retries.

        One client is reused for every request, so no request pays for a connection set-up
        after the first; it sends over aiohttp (see _transport) to keep the prober's own
        time out of the totals. ``max_retries=0``: the engine counts and backs off from 429s.
        """
        transport = AiohttpTransport(limit=max_connections or 0)
        async with (
            httpx.AsyncClient(transport=transport) as http,
            RunPodClient(
                self.endpoint_id,
                self.api_key,
                base_url=self.base_url,
                client=http,
                timeout=timeout_s,
                max_retries=0,
            ) as client,
        ):
            yield client


def hosted_target(common: CommonSettings) -> Target | None:
    """The hosted endpoint when RUNPOD_ENDPOINT_ID is set; TargetError if its key is not."""
    if not common.runpod_endpoint_id:
        return None
    try:
        RUNPOD_API_KEY.require()
    except SecretError as exc:
        raise TargetError(f"RUNPOD_ENDPOINT_ID is set but {exc}") from None

    def key() -> str:
        # Re-read on every request: a rotated key takes effect mid-soak.
        return RUNPOD_API_KEY.require()

    return Target(
        endpoint_id=common.runpod_endpoint_id,
        base_url=common.runpod_endpoint_base_url,
        api_key=key,
        kind="hosted",
    )


@contextlib.contextmanager
def embedded_twin(settings: ProberSettings) -> Iterator[Target]:
    """Start a twin with calibrated workers for the block; yield it as a Target."""
    # Imported here: the twin pulls in starlette/uvicorn, which a hosted run never needs.
    from podpulse.worker.twin.testing import running_twin

    env = {
        "CALIBRATED_EXEC_MS": str(settings.twin_exec_ms),
        "CALIBRATED_DISTRIBUTION": settings.twin_exec_distribution,
        "CALIBRATED_JITTER": str(settings.twin_exec_jitter),
        "CALIBRATED_ERROR_RATE": str(settings.twin_error_rate),
        "CALIBRATED_CRASH_RATE": str(settings.twin_crash_rate),
        "WORKER_MAX_CONCURRENCY": str(settings.twin_worker_concurrency),
    }
    with running_twin(
        workers_min=settings.twin_workers_min,
        workers_max=max(settings.twin_workers_max, settings.twin_workers_min, 1),
        env=env,
        scaler_type="QUEUE_DELAY",
        scaler_value=1,
        idle_timeout_s=settings.twin_idle_timeout_s,
    ) as twin:
        yield Target(
            endpoint_id=twin.endpoint_id,
            base_url=twin.base_url,
            api_key=twin.api_key,
            kind="twin",
        )


@contextlib.contextmanager
def resolve_target(settings: ProberSettings, common: CommonSettings) -> Iterator[Target]:
    """The hosted endpoint if one is configured, else an embedded twin for the block."""
    hosted = hosted_target(common)
    if hosted is not None:
        yield hosted
        return
    with embedded_twin(settings) as twin:
        yield twin
