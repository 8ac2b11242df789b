"""OpenTelemetry tracing for every podpulse process, from the standard ``OTEL_*`` variables.

The SDK reads most variables itself (resource attributes and service name, exporter endpoint,
headers, timeout, compression, batch sizes, sampler); podpulse decides only whether to record
(OTEL_SDK_DISABLED) and which exporters to attach (OTEL_TRACES_EXPORTER), via
:class:`TelemetrySettings`.

OpenTelemetry lets a process set its global TracerProvider once. podpulse sets it once, to a
provider of its own that forwards every tracer to the current pipeline: an SDK TracerProvider
with its resource and exporters. Configuring again (a second call in tests, or a Celery
prefork child, which inherits its parent's pipeline without the export thread) builds a new
pipeline and switches to it; tracers taken earlier, even at import time or in the parent
before the fork, follow the switch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.re import parse_env_headers
from opentelemetry.util.types import Attributes

from podpulse.common.settings import ALERTER_RECEIVER_TOKEN, SecretError, TelemetrySettings

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from celery import Celery

__all__ = ["configure_telemetry", "init_after_fork", "shutdown_telemetry"]

_log = logging.getLogger(__name__)


class _Switchboard(trace.TracerProvider):
    """The process's global provider: every tracer it hands out uses the current pipeline."""

    def __init__(self) -> None:
        # (generation, provider) in one tuple, so a reader never pairs a number with the
        # wrong provider; the generation tells a tracer that its cached delegate is stale.
        self._current: tuple[int, trace.TracerProvider] = (0, trace.NoOpTracerProvider())

    def current(self) -> tuple[int, trace.TracerProvider]:
        return self._current

    def switch(self, provider: trace.TracerProvider) -> None:
        self._current = (self._current[0] + 1, provider)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        return _ForwardingTracer(
            self, instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )


class _ForwardingTracer(trace.Tracer):
    """A tracer of the switchboard: resolves its delegate again after every switch."""

    def __init__(
        self,
        board: _Switchboard,
        name: str,
        version: str | None,
        schema_url: str | None,
        attributes: Attributes,
    ) -> None:
        self._board = board
        self._scope = (name, version, schema_url, attributes)
        self._resolved: tuple[int, trace.Tracer] | None = None

    def _delegate(self) -> trace.Tracer:
        generation, provider = self._board.current()
        resolved = self._resolved
        if resolved is None or resolved[0] != generation:
            resolved = (generation, provider.get_tracer(*self._scope))
            self._resolved = resolved
        return resolved[1]

    def start_span(  # noqa: PLR0917 - the API's signature, positional arguments included
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self._delegate().start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    # The delegate's own context manager is returned unwrapped, so it keeps working as a
    # decorator of async functions (the span then ends when the coroutine does). The API
    # declares this method's return type with a private class; ours is its public base.
    def start_as_current_span(  # type: ignore[override]  # noqa: PLR0917 - as start_span
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> AbstractContextManager[Span]:
        return self._delegate().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )


@dataclass(frozen=True, slots=True)
class _Pipeline:
    pid: int
    provider: TracerProvider


_SWITCHBOARD = _Switchboard()
_lock = threading.Lock()
_pipeline: _Pipeline | None = None


def configure_telemetry(
    service_name: str,
    *,
    settings: TelemetrySettings,
    exporter: SpanExporter | None = None,
    console_out: TextIO | None = None,
) -> TracerProvider:
    """Build a tracing pipeline, make it the one every tracer uses, and return its provider.

    A pipeline configured before (in this process, or in the parent this one was forked from)
    is replaced and shut down; the parent's own copy is untouched. *service_name* is the
    default ``service.name``; OTEL_SERVICE_NAME or a ``service.name`` in
    OTEL_RESOURCE_ATTRIBUTES overrides it, so a deployment can rename a process without a
    rebuild. *exporter*, when given, replaces the exporters *settings* name (tests).
    *console_out* is where the ``console`` exporter writes (default stdout, the SDK's): a
    command whose stdout is its result (``--json``) sends spans to stderr instead.
    """
    global _pipeline
    defaults: dict[str, str] = {SERVICE_NAME: service_name}
    if endpoint := os.environ.get("RUNPOD_ENDPOINT_ID"):
        # RunPod sets it in every worker's environment (the twin does too): the alerter keys a
        # worker's GenAI spans by it, with no OTEL_RESOURCE_ATTRIBUTES to write by hand.
        defaults["runpod.endpoint.id"] = endpoint
    resource = Resource.create(defaults).merge(OTELResourceDetector().detect())
    if settings.sdk_disabled:
        # Spans are non-recording, so nothing reaches a processor; none is attached anyway.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        provider = TracerProvider(resource=resource)
        chosen = _exporters(settings, console_out)
        for each in [exporter] if exporter is not None else chosen:
            provider.add_span_processor(BatchSpanProcessor(each))
    with _lock:
        _install_switchboard()
        previous, _pipeline = _pipeline, _Pipeline(os.getpid(), provider)
        _SWITCHBOARD.switch(provider)
    if previous is not None:
        _retire(previous)
    return provider


def shutdown_telemetry() -> None:
    """Flush every pending span and shut the pipeline down; later spans record nothing.

    A later :func:`configure_telemetry` builds a new pipeline. Call it before a process exits
    by a path that skips ``atexit`` (Celery's prefork children leave with ``os._exit``).
    """
    global _pipeline
    with _lock:
        previous, _pipeline = _pipeline, None
        _SWITCHBOARD.switch(trace.NoOpTracerProvider())
    if previous is not None:
        _retire(previous)


def init_after_fork(
    celery_app: Celery, service_name: str, *, settings: TelemetrySettings
) -> Callable[[], None]:
    """Configure telemetry in each Celery worker child, and flush it when the child exits.

    Call it where the service's Celery app is built, with the settings its entry point built;
    the parent process need not configure telemetry itself. The signals fire in each prefork
    child (and, for the solo and threads pools, in the worker process itself). Returns a
    function that disconnects both handlers again, for tests.
    """
    # Imported here so that processes without Celery (the RunPod worker) need not import it.
    from celery.signals import worker_process_init, worker_process_shutdown

    def _on_init(**_: Any) -> None:
        configure_telemetry(service_name, settings=settings)

    def _on_shutdown(**_: Any) -> None:
        shutdown_telemetry()

    # weak=False: the closures would otherwise be collected as soon as this function returns.
    # dispatch_uid: building the same app twice (tests, reloads) must not connect twice.
    uid = f"podpulse-otel-{celery_app.main}-{service_name}"
    worker_process_init.connect(_on_init, weak=False, dispatch_uid=f"{uid}-init")
    worker_process_shutdown.connect(_on_shutdown, weak=False, dispatch_uid=f"{uid}-shutdown")

    def disconnect() -> None:
        worker_process_init.disconnect(dispatch_uid=f"{uid}-init")
        worker_process_shutdown.disconnect(dispatch_uid=f"{uid}-shutdown")

    return disconnect


def _install_switchboard() -> None:
    if trace.get_tracer_provider() is _SWITCHBOARD:
        return
    trace.set_tracer_provider(_SWITCHBOARD)
    if trace.get_tracer_provider() is not _SWITCHBOARD:
        # Someone set the global provider first (opentelemetry-instrument, say); the API will
        # not let it be replaced. Spans through the global API go there, not to our pipeline.
        _log.warning(
            "another global TracerProvider is installed; podpulse's pipeline receives only "
            "spans from tracers taken from the provider configure_telemetry returns"
        )


def _retire(pipeline: _Pipeline) -> None:
    if pipeline.pid == os.getpid():
        pipeline.provider.force_flush()
    # An inherited pipeline: the SDK emptied its queue in the child at fork, so shutting this
    # copy down sends nothing of the parent's twice; it stops the export thread the SDK
    # restarted here. The parent's own pipeline is not affected.
    pipeline.provider.shutdown()


def _alerter_authorization() -> dict[str, str] | None:
    """``Authorization: Bearer <ALERTER_RECEIVER_TOKEN>`` when that token (or its file) is set,
    so spans reach podpulse's alerter where it asks for one, unless the OTLP headers
    variables already carry an authorization of the user's own."""
    configured = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    if "authorization" in {key.lower() for key in parse_env_headers(configured, liberal=True)}:
        return None
    try:
        token = ALERTER_RECEIVER_TOKEN.get()
    except SecretError as exc:
        # Tracing must not stop the process it traces; the alerter's 401s will show it too.
        _log.warning("spans are exported without the alerter's token: %s", exc)
        return None
    return {"authorization": f"Bearer {token}"} if token else None


def _exporters(settings: TelemetrySettings, console_out: TextIO | None) -> Iterator[SpanExporter]:
    for name in settings.traces_exporter:
        if name == "otlp":
            # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT and
            # _COMPRESSION itself, per the spec; headers given here are added to those.
            yield OTLPSpanExporter(headers=_alerter_authorization())
        elif name == "console":
            yield (
                ConsoleSpanExporter()
                if console_out is None
                else ConsoleSpanExporter(out=console_out)
            )
