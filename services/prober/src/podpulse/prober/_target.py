"""What the prober sends requests to: the hosted endpoint, or an embedded twin, as asked.

``hosted``: the endpoint ``RUNPOD_ENDPOINT_ID`` names, its key from ``RUNPOD_API_KEY`` or
``RUNPOD_API_KEY_FILE`` (re-read on every request, so a rotated key takes effect mid-soak).
Either missing is a ``TargetError``: a hosted probe never falls back to a twin, since a monitor
that reports a twin's green for an endpoint it cannot reach is worse than none.

``twin``: a local twin started for the run, with real runpod SDK worker processes running the
calibrated handler, and stopped afterwards. It is configured by the twin's own settings
(``TWIN_*`` and ``TWIN_CALIBRATED_*``, whose defaults are RunPod's recommended 2 to 5 workers
and one-second lognormal jobs), built at the entry point and passed in as an ``EmbeddedTwin``.
When the run ends -- Ctrl-C, SIGTERM, the stop rule -- the twin's own stop fails the jobs the
run left unfinished, naming the stop, so no /runsync is left waiting.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from podpulse.common.runpod import ApiKey, RunPodClient
from podpulse.common.settings import RUNPOD_API_KEY, CommonSettings, SecretError
from podpulse.common.summary import TargetInfo, TargetKind

from ._transport import AiohttpTransport

if TYPE_CHECKING:  # the twin (starlette, uvicorn) is imported only when a run starts one
    from podpulse.twin import CalibratedSettings, TwinSettings

__all__ = [
    "EmbeddedTwin",
    "Target",
    "TargetError",
    "default_target_kind",
    "embedded_twin",
    "hosted_target",
    "open_target",
]


class TargetError(RuntimeError):
    """No usable endpoint: the message says what is missing."""


@dataclass(frozen=True)
class Target:
    """An endpoint to probe: enough to build a ``RunPodClient``."""

    endpoint_id: str
    base_url: str
    api_key: ApiKey = field(repr=False)
    kind: TargetKind = "hosted"

    def info(self) -> TargetInfo:
        """What summaries and events say about this target: kind, endpoint id, base URL."""
        return TargetInfo(kind=self.kind, endpoint_id=self.endpoint_id, base_url=self.base_url)

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


def hosted_target(common: CommonSettings) -> Target:
    """The endpoint RUNPOD_ENDPOINT_ID names; TargetError when it or its key is missing."""
    if not common.runpod_endpoint_id:
        raise TargetError("the hosted target needs RUNPOD_ENDPOINT_ID, which is not set")
    try:
        RUNPOD_API_KEY.require()
    except SecretError as exc:
        raise TargetError(f"the hosted target needs its key: {exc}") from None

    def key() -> str:
        # Re-read on every request: a rotated key takes effect mid-soak.
        return RUNPOD_API_KEY.require()

    return Target(
        endpoint_id=common.runpod_endpoint_id,
        base_url=common.runpod_endpoint_base_url,
        api_key=key,
        kind="hosted",
    )


def default_target_kind(common: CommonSettings) -> TargetKind:
    """The command line's default: hosted when an endpoint is configured, else a twin."""
    return "hosted" if common.runpod_endpoint_id else "twin"


@dataclass(frozen=True)
class EmbeddedTwin:
    """How the twin target starts its twin: the platform's and the calibrated handler's settings."""

    settings: TwinSettings
    calibrated: CalibratedSettings

    @classmethod
    def from_env(cls) -> EmbeddedTwin:
        """Both read from the environment (``TWIN_*``, ``TWIN_CALIBRATED_*``), at an entry point."""
        from podpulse.twin import CalibratedSettings, TwinSettings

        return cls(settings=TwinSettings(), calibrated=CalibratedSettings())

    def for_api(self, api: str) -> EmbeddedTwin:
        """The twin a run on *api* needs: a streamed run (stream, openai) gets the streaming
        stand-in (``calibrated-stream``) unless TWIN_HANDLER chose a handler, since the whole
        one answers at once and would give the run no first token to time."""
        if api == "runsync" or "handler" in self.settings.model_fields_set:
            return self
        streaming = self.settings.model_copy(update={"handler": "calibrated-stream"})
        return EmbeddedTwin(settings=streaming, calibrated=self.calibrated)


@contextlib.contextmanager
def embedded_twin(twin: EmbeddedTwin) -> Iterator[Target]:
    """Start a twin with calibrated workers for the block; yield it as a Target."""
    from podpulse.twin import running_twin

    started = False
    try:
        with running_twin(twin.settings, twin.calibrated) as running:
            started = True
            yield Target(
                endpoint_id=running.endpoint_id,
                base_url=running.base_url,
                api_key=running.api_key,
                kind="twin",
            )
    except TimeoutError as exc:
        if started:
            raise  # the run's own, not the twin's start
        # Its workers never came up: one line naming why, not a traceback.
        raise TargetError(f"the embedded twin did not start: {exc}") from None


@contextlib.contextmanager
def open_target(
    kind: TargetKind, common: CommonSettings, twin: EmbeddedTwin | None, *, api: str = "runsync"
) -> Iterator[Target]:
    """The target of *kind* for the block: TargetError, never another kind, when it is not
    configured (hosted: no endpoint or key; twin: no twin settings were built). *api* is the
    run's, which picks the twin's stand-in handler (:meth:`EmbeddedTwin.for_api`)."""
    if kind == "hosted":
        yield hosted_target(common)
        return
    if twin is None:
        raise TargetError("the twin target needs the twin's settings, and none were given")
    with embedded_twin(twin.for_api(api)) as target:
        yield target
