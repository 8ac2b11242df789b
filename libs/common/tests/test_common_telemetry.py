"""configure_telemetry, shutdown_telemetry and init_after_fork, against real exporters."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery.signals import worker_process_init, worker_process_shutdown
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings
from podpulse.common.telemetry import configure_telemetry, init_after_fork, shutdown_telemetry


@dataclass
class _Received:
    path: str
    headers: dict[str, str]
    request: ExportTraceServiceRequest


@dataclass
class _Collector:
    url: str
    received: list[_Received] = field(default_factory=list)

    def spans(self) -> list[tuple[str, str, dict[str, object]]]:
        """(service.name, span name, attributes) of every span received."""
        found: list[tuple[str, str, dict[str, object]]] = []
        for item in self.received:
            for resource_spans in item.request.resource_spans:
                resource = _attrs(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend(
                        (str(resource["service.name"]), span.name, _attrs(span.attributes))
                        for span in scope_spans.spans
                    )
        return found


def _attrs(kvs: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in kvs:  # type: ignore[attr-defined]
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Collector]:
    """A real OTLP/HTTP endpoint on loopback that records every export request it gets."""
    received: list[_Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            headers = {key.lower(): value for key, value in self.headers.items()}
            received.append(_Received(self.path, headers, request))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    try:
        yield _Collector(url, received)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _fresh_telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield
    shutdown_telemetry()


def test_spans_are_exported_with_exact_names_and_attributes() -> None:
    """A span made through the global API reaches the exporter as made, under service.name."""
    exporter = InMemorySpanExporter()
    provider = configure_telemetry("prober", exporter=exporter)
    assert trace.get_tracer_provider() is provider
    tracer = trace.get_tracer("podpulse.prober")
    with tracer.start_as_current_span("runpod.job", kind=SpanKind.CLIENT) as span:
        span.set_attribute("runpod.endpoint.id", "ep1")
        span.set_attribute("runpod.execution_ms", 1234)
    shutdown_telemetry()
    (finished,) = exporter.get_finished_spans()
    assert (finished.name, finished.kind) == ("runpod.job", SpanKind.CLIENT)
    assert dict(finished.attributes or {}) == {
        "runpod.endpoint.id": "ep1",
        "runpod.execution_ms": 1234,
    }
    assert finished.resource.attributes["service.name"] == "prober"


def test_configure_is_idempotent() -> None:
    """A second configure_telemetry in the same process returns the first provider."""
    first = configure_telemetry("prober", exporter=InMemorySpanExporter())
    assert configure_telemetry("alerter") is first


def test_standard_resource_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SERVICE_NAME overrides the code's name; OTEL_RESOURCE_ATTRIBUTES adds attributes."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "prober-canary")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=ml")
    provider = configure_telemetry("prober", exporter=InMemorySpanExporter())
    attributes = provider.resource.attributes
    assert (
        attributes["service.name"],
        attributes["deployment.environment"],
        attributes["team"],
    ) == (
        "prober-canary",
        "ci",
        "ml",
    )


def test_sdk_disabled_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true gives non-recording spans and exports nothing."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exporter = InMemorySpanExporter()
    configure_telemetry("prober", exporter=exporter)
    with trace.get_tracer("t").start_as_current_span("x") as span:
        assert not span.is_recording()
    shutdown_telemetry()
    assert exporter.get_finished_spans() == ()


def test_otlp_http_export_reaches_a_real_server(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans go as OTLP/HTTP protobuf to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, headers included."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-podpulse-canary=yes")
    configure_telemetry("alerter")
    with trace.get_tracer("t").start_as_current_span("runpod.job") as span:
        span.set_attribute("runpod.job.status", "COMPLETED")
    shutdown_telemetry()
    assert collector.spans() == [("alerter", "runpod.job", {"runpod.job.status": "COMPLETED"})]
    (received,) = collector.received
    assert received.path == "/v1/traces"
    assert received.headers["content-type"] == "application/x-protobuf"
    assert received.headers["x-podpulse-canary"] == "yes"


def test_exporter_none_sends_nothing(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_EXPORTER=none builds no exporter: the endpoint receives nothing."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    configure_telemetry("alerter")
    with trace.get_tracer("t").start_as_current_span("dropped"):
        pass
    shutdown_telemetry()
    assert collector.received == []


def test_forked_worker_child_builds_and_flushes_its_own_provider(collector: _Collector) -> None:
    """After a fork, worker_process_init gives the child a fresh provider whose spans arrive."""
    parent_provider = configure_telemetry("parent")
    app = create_celery_app("tagger", CommonSettings())
    disconnect = init_after_fork(app, "tagger")
    try:
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                worker_process_init.send(sender=None)
                child_provider = trace.get_tracer_provider()
                with trace.get_tracer("t").start_as_current_span("in.child"):
                    pass
                worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
                code = 0 if child_provider is not parent_provider else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        disconnect()
    assert os.waitstatus_to_exitcode(status) == 0
    assert collector.spans() == [("tagger", "in.child", {})]
    assert trace.get_tracer_provider() is parent_provider
