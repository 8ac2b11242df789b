"""configure_telemetry, shutdown_telemetry and init_after_fork, against real exporters."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from celery.signals import worker_process_init, worker_process_shutdown
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings, TelemetrySettings
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
    for kv in kvs:  # type: ignore[attr-defined]  # protobuf repeated fields, passed as object
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


def _settings(**values: object) -> TelemetrySettings:
    # The fixture cleared OTEL_*, so these are the values given and the defaults.
    return TelemetrySettings.model_validate(values)


def test_spans_are_exported_with_exact_names_and_attributes() -> None:
    """A span made through the global API reaches the exporter as made, under service.name."""
    exporter = InMemorySpanExporter()
    configure_telemetry("prober", settings=_settings(), exporter=exporter)
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
    assert finished.instrumentation_scope is not None
    assert finished.instrumentation_scope.name == "podpulse.prober"


def _names_and_services(exporter: InMemorySpanExporter) -> list[tuple[str, object]]:
    return [(s.name, s.resource.attributes["service.name"]) for s in exporter.get_finished_spans()]


def test_reconfiguring_switches_every_tracer_to_the_new_pipeline() -> None:
    """A tracer taken before any configure follows each new pipeline; the old one is flushed."""
    tracer = trace.get_tracer("podpulse.test")
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    configure_telemetry("prober", settings=_settings(), exporter=first)
    with tracer.start_as_current_span("one"):
        pass
    configure_telemetry("alerter", settings=_settings(), exporter=second)
    with tracer.start_as_current_span("two"):
        pass
    shutdown_telemetry()
    assert _names_and_services(first) == [("one", "prober")]
    assert _names_and_services(second) == [("two", "alerter")]


def test_a_decorated_coroutine_is_one_span_around_the_whole_call() -> None:
    """start_as_current_span as a coroutine's decorator ends when the coroutine does."""
    exporter = InMemorySpanExporter()
    configure_telemetry("prober", settings=_settings(), exporter=exporter)
    tracer = trace.get_tracer("podpulse.test")

    @tracer.start_as_current_span("outer")
    async def work() -> None:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("inner"):
            pass

    asyncio.run(work())
    shutdown_telemetry()
    inner, outer = exporter.get_finished_spans()
    assert (inner.name, outer.name) == ("inner", "outer")
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id


def test_the_global_provider_is_set_once(caplog: pytest.LogCaptureFixture) -> None:
    """Configuring twice sets the global provider once: the API logs no override attempt."""
    configure_telemetry("prober", settings=_settings(), exporter=InMemorySpanExporter())
    installed = trace.get_tracer_provider()
    with caplog.at_level(logging.WARNING):
        configure_telemetry("prober", settings=_settings(), exporter=InMemorySpanExporter())
    assert trace.get_tracer_provider() is installed
    assert "Overriding of current TracerProvider" not in caplog.text


def test_after_shutdown_spans_record_nothing() -> None:
    """Once shut down, spans are non-recording and the old exporter receives nothing more."""
    exporter = InMemorySpanExporter()
    configure_telemetry("prober", settings=_settings(), exporter=exporter)
    shutdown_telemetry()
    with trace.get_tracer("t").start_as_current_span("late") as span:
        assert not span.is_recording()
    assert exporter.get_finished_spans() == ()


def test_standard_resource_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SERVICE_NAME overrides the code's name; OTEL_RESOURCE_ATTRIBUTES adds attributes."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "prober-canary")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=ml")
    provider = configure_telemetry("prober", settings=_settings(), exporter=InMemorySpanExporter())
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


def test_a_workers_spans_name_the_endpoint_runpod_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """RUNPOD_ENDPOINT_ID (set by RunPod, and the twin, in a worker's environment) becomes the
    resource's runpod.endpoint.id, which the alerter keys GenAI spans by; an explicit
    OTEL_RESOURCE_ATTRIBUTES value wins."""
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "ep-canary")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = configure_telemetry("worker", settings=_settings(), exporter=InMemorySpanExporter())
    assert provider.resource.attributes["runpod.endpoint.id"] == "ep-canary"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "runpod.endpoint.id=ep-chosen")
    provider = configure_telemetry("worker", settings=_settings(), exporter=InMemorySpanExporter())
    assert provider.resource.attributes["runpod.endpoint.id"] == "ep-chosen"


def test_sdk_disabled_records_nothing() -> None:
    """OTEL_SDK_DISABLED=true gives non-recording spans and exports nothing."""
    exporter = InMemorySpanExporter()
    configure_telemetry("prober", settings=_settings(sdk_disabled=True), exporter=exporter)
    with trace.get_tracer("t").start_as_current_span("x") as span:
        assert not span.is_recording()
    shutdown_telemetry()
    assert exporter.get_finished_spans() == ()


def test_otlp_http_export_reaches_a_real_server(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans go as OTLP/HTTP protobuf to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, headers included."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-podpulse-canary=yes")
    configure_telemetry("alerter", settings=_settings())
    with trace.get_tracer("t").start_as_current_span("runpod.job") as span:
        span.set_attribute("runpod.job.status", "COMPLETED")
    shutdown_telemetry()
    assert collector.spans() == [("alerter", "runpod.job", {"runpod.job.status": "COMPLETED"})]
    (received,) = collector.received
    assert received.path == "/v1/traces"
    assert received.headers["content-type"] == "application/x-protobuf"
    assert received.headers["x-podpulse-canary"] == "yes"


@pytest.mark.parametrize("configured", [None, "Authorization=Basic%20dXNlcg=="])
def test_the_alerters_token_goes_as_the_bearer_unless_headers_name_one(
    collector: _Collector,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    configured: str | None,
) -> None:
    """ALERTER_RECEIVER_TOKEN (here its file) is sent as ``Authorization: Bearer``, beside
    the configured headers; an authorization in OTEL_EXPORTER_OTLP_HEADERS is the user's own
    and wins."""
    (tmp_path / "token").write_text("receiver-token\n")
    monkeypatch.delenv("ALERTER_RECEIVER_TOKEN", raising=False)
    monkeypatch.setenv("ALERTER_RECEIVER_TOKEN_FILE", str(tmp_path / "token"))
    headers = "x-podpulse-canary=yes" + (f",{configured}" if configured else "")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers)
    configure_telemetry("prober", settings=_settings())
    with trace.get_tracer("t").start_as_current_span("runpod.job"):
        pass
    shutdown_telemetry()
    (received,) = collector.received
    assert received.headers["x-podpulse-canary"] == "yes"
    expected = "Basic dXNlcg==" if configured else "Bearer receiver-token"
    assert received.headers["authorization"] == expected


def test_exporter_none_sends_nothing(collector: _Collector) -> None:
    """OTEL_TRACES_EXPORTER=none builds no exporter: the endpoint receives nothing."""
    configure_telemetry("alerter", settings=_settings(traces_exporter="none"))
    with trace.get_tracer("t").start_as_current_span("dropped"):
        pass
    shutdown_telemetry()
    assert collector.received == []


def test_forked_worker_child_builds_and_flushes_its_own_pipeline(collector: _Collector) -> None:
    """After a fork, worker_process_init gives the child its own pipeline; the parent keeps its."""
    parent_exporter = InMemorySpanExporter()
    configure_telemetry("parent", settings=_settings(), exporter=parent_exporter)
    tracer = trace.get_tracer("podpulse.test")  # taken in the parent, used in both
    app = create_celery_app("tagger", CommonSettings())
    disconnect = init_after_fork(app, "tagger", settings=_settings())
    try:
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                worker_process_init.send(sender=None)
                with tracer.start_as_current_span("in.child"):
                    pass
                worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        disconnect()
    assert os.waitstatus_to_exitcode(status) == 0
    assert collector.spans() == [("tagger", "in.child", {})]
    with tracer.start_as_current_span("in.parent"):
        pass
    shutdown_telemetry()
    assert [s.name for s in parent_exporter.get_finished_spans()] == ["in.parent"]


_FOREIGN_PROVIDER_FIRST = """
import logging, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from podpulse.common.settings import TelemetrySettings
from podpulse.common.telemetry import configure_telemetry

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
foreign = TracerProvider()
trace.set_tracer_provider(foreign)
exporter = InMemorySpanExporter()
ours = configure_telemetry("prober", settings=TelemetrySettings(), exporter=exporter)
with ours.get_tracer("t").start_as_current_span("explicit"):
    pass
ours.force_flush()
assert trace.get_tracer_provider() is foreign
print([span.name for span in exporter.get_finished_spans()])
"""


def test_a_foreign_global_provider_is_left_alone_and_reported() -> None:
    """If another provider was set first, it stays, a warning says so, and ours still works."""
    # A fresh interpreter: the global provider can be set once per process, and this one's is.
    result = subprocess.run(
        [sys.executable, "-c", _FOREIGN_PROVIDER_FIRST],
        capture_output=True, text=True, timeout=60, check=False,
        env={key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['explicit']"
    assert "another global TracerProvider is installed" in result.stderr
