"""Building OTLP trace requests for the ingest tests: protobuf messages and OTLP JSON."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from starlette.applications import Starlette

from podpulse.alerter.settings import AlerterSettings
from podpulse.common.testing import free_port, wait_until

NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15) for tests that pass their own clock


def job_attrs(
    endpoint: str = "ep1",
    *,
    exec_ms: float | None = 1000.0,
    delay_ms: float | None = 200.0,
    total_ms: float | None = 1500.0,
    status: str = "COMPLETED",
    model: str | None = "qwen",
    tokens_per_s: float | None = 40.0,
) -> dict[str, Any]:
    """The attributes the prober puts on a runpod.job span (None: left out)."""
    values = {
        "runpod.endpoint.id": endpoint,
        "podpulse.target.kind": "hosted",
        "runpod.job.id": "job-1",
        "runpod.job.status": status,
        "runpod.execution_ms": exec_ms,
        "runpod.delay_ms": delay_ms,
        "podpulse.total_ms": total_ms,
        "gen_ai.request.model": model,
        "gen_ai.usage.output_tokens": 40,
        "podpulse.tokens_per_second": tokens_per_s,
    }
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class SpanSpec:
    """One span to encode: its name, end time (Unix s), duration, attributes, error flag."""

    attrs: Mapping[str, Any]
    end_s: float = NOW
    name: str = "runpod.job"
    duration_s: float = 1.5
    error: bool = False
    resource: Mapping[str, Any] = field(default_factory=dict)


def any_value(value: Any) -> AnyValue:
    """An AnyValue holding a Python scalar."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _status(error: bool) -> Status:
    return Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET)


def _kvs(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def proto_request(specs: Iterable[SpanSpec]) -> ExportTraceServiceRequest:
    """One ResourceSpans per span (each with its own resource attributes)."""
    request = ExportTraceServiceRequest()
    for n, spec in enumerate(specs):
        end_ns = round(spec.end_s * 1e9)
        span = Span(
            trace_id=n.to_bytes(16, "big"),
            span_id=(n + 1).to_bytes(8, "big"),
            name=spec.name,
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=end_ns - round(spec.duration_s * 1e9),
            end_time_unix_nano=end_ns,
            attributes=_kvs(spec.attrs),
            status=_status(spec.error),
        )
        rs = ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])
        rs.resource.attributes.extend(_kvs(spec.resource))
        request.resource_spans.append(rs)
    return request


def json_body(request: ExportTraceServiceRequest) -> bytes:
    """OTLP JSON: camelCase, int64 as strings, integer enums, hex trace and span ids."""
    data = json_format.MessageToDict(request, use_integers_for_enums=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in node:
                    node[key] = base64.b64decode(node[key]).hex()
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    fix(data)
    return json.dumps(data).encode()


def settings(**overrides: Any) -> AlerterSettings:
    """Alerter settings, validated, with fields set by name."""
    return AlerterSettings(**overrides)


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve *app* with uvicorn on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout_s=20, what=f"uvicorn on {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def unique_prefix(name: str) -> str:
    """A Redis key prefix no other test (or run) uses."""
    return f"podpulse-test:{name}:{os.getpid()}:{os.urandom(4).hex()}:"
