"""OpenTelemetry tracing for every podpulse process, from the standard ``OTEL_*`` variables.

The SDK reads most variables itself (resource attributes and service name, exporter endpoint,
headers, timeout, compression, batch sizes, sampler, OTEL_SDK_DISABLED); podpulse decides only
which exporters to attach (OTEL_TRACES_EXPORTER), via :class:`TelemetrySettings`.

Celery's prefork pool forks children from a parent whose BatchSpanProcessor thread does not
survive the fork; :func:`init_after_fork` gives every child a provider of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.util._once import Once

from podpulse.common.settings import TelemetrySettings

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["configure_telemetry", "init_after_fork", "shutdown_telemetry"]


@dataclass(frozen=True, slots=True)
class _Installed:
    pid: int
    provider: TracerProvider


_lock = threading.Lock()
_installed: _Installed | None = None
# Whether the API's global provider is one of ours (set by this process or the parent it was
# forked from), and so ours to replace; see _install_global.
_global_is_ours = False


def configure_telemetry(
    service_name: str,
    *,
    settings: TelemetrySettings | None = None,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Build the process's TracerProvider, install it globally and return it.

    Idempotent within a process: a second call returns the first provider. In a child forked
    after the parent configured telemetry, it builds a fresh provider (see module docstring).
    *service_name* is the default ``service.name``; OTEL_SERVICE_NAME or a ``service.name`` in
    OTEL_RESOURCE_ATTRIBUTES overrides it, so a deployment can rename a process without a
    rebuild. *exporter*, when given, replaces the exporters OTEL_TRACES_EXPORTER names (tests).
    """
    global _installed, _global_is_ours  # noqa: PLW0603 - one provider per process is the point
    with _lock:
        if _installed is not None:
            if _installed.pid == os.getpid():
                return _installed.provider
            # Inherited from the parent across a fork. Stop this copy and the export thread the
            # SDK restarts in the child; the SDK emptied its queue at fork, so nothing of the
            # parent's is sent twice.
            _installed.provider.shutdown()
        conf = TelemetrySettings() if settings is None else settings
        resource = Resource.create({SERVICE_NAME: service_name}).merge(
            OTELResourceDetector().detect()
        )
        provider = TracerProvider(resource=resource)
        if not conf.otel_sdk_disabled:
            exporters = [exporter] if exporter is not None else _exporters(conf)
            for each in exporters:
                provider.add_span_processor(BatchSpanProcessor(each))
        _install_global(provider, replace=_global_is_ours)
        _global_is_ours = trace.get_tracer_provider() is provider
        _installed = _Installed(os.getpid(), provider)
        return provider


def shutdown_telemetry() -> None:
    """Flush every pending span and shut this process's provider down.

    A later :func:`configure_telemetry` builds a new one. Call it before a process exits by a
    path that skips ``atexit`` (Celery's prefork children leave with ``os._exit``).
    """
    global _installed
    with _lock:
        installed, _installed = _installed, None
    if installed is not None and installed.pid == os.getpid():
        installed.provider.force_flush()
        installed.provider.shutdown()


def init_after_fork(celery_app: Celery, service_name: str) -> Callable[[], None]:
    """Configure telemetry in each Celery worker child, and flush it when the child exits.

    Call it where the service's Celery app is built, and do not configure telemetry in the
    worker's parent process: the signals fire in each prefork child (and, for the solo and
    threads pools, in the worker process itself). Returns a function that disconnects both
    handlers again, for tests.
    """
    # Imported here so that processes without Celery (the RunPod worker) need not import it.
    from celery.signals import worker_process_init, worker_process_shutdown

    def _on_init(**_: Any) -> None:
        configure_telemetry(service_name)

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


def _exporters(conf: TelemetrySettings) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in conf.otel_traces_exporter:
        if name == "otlp":
            # No arguments: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS,
            # _TIMEOUT and _COMPRESSION itself, per the spec.
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
    return exporters


def _install_global(provider: TracerProvider, *, replace: bool) -> None:
    if replace:
        # The API lets the global provider be set once per process. Ours was set before a fork
        # (the parent's, whose export thread is gone) or before shutdown_telemetry(); either way
        # it is ours to replace. A tracer already resolved against the old provider keeps it:
        # take tracers after configuring, or before (the API's proxy tracers resolve on first
        # use), never in a parent that configured and then forked.
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(provider)
