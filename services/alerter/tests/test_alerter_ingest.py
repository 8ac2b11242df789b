"""The OTLP/HTTP input in-process: encodings, gzip, limits, token, replies, span reading."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
import socket
import threading
from typing import Any

import httpx
import pytest
import redis
from google.rpc.status_pb2 import Status
from ingest_helpers import NOW, SpanSpec, job_attrs, json_body, proto_request, serve, settings
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.backoff import NoBackoff
from redis.retry import Retry

from podpulse.alerter import (
    MemoryWindowStore,
    Observation,
    RedisWindowStore,
    SeriesKey,
    create_ingest_app,
)
from podpulse.alerter._ingest import _metrics as m
from podpulse.common.settings import Secret
from podpulse.common.testing import wait_until

PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}
EP1 = SeriesKey("ep1", "qwen")


def _app(**overrides: object) -> tuple[httpx.AsyncClient, MemoryWindowStore]:
    s = settings(**overrides)
    store = MemoryWindowStore(
        bucket_s=s.bucket_s,
        retention_s=s.retention_s,
        max_series=s.max_series,
        clock=lambda: NOW,
        on_evict=lambda _: m.SERIES_EVICTED.inc(),
    )
    app = create_ingest_app(s, store, clock=lambda: NOW, token=Secret("ALERTER_TEST_TOKEN"))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")
    return client, store


def _jobs(n: int, **kw: object) -> list[SpanSpec]:
    return [SpanSpec(job_attrs(exec_ms=100.0 * (i + 1), **kw), end_s=NOW - i) for i in range(n)]


async def test_protobuf_and_json_bodies_give_the_same_windows() -> None:
    """The same 20 runpod.job spans as protobuf, gzipped protobuf and OTLP JSON (hex ids,
    string int64s) give identical windows, and full success replies in the request's type."""
    request = proto_request(_jobs(20))
    bodies = [
        (PB, request.SerializeToString()),
        ({**PB, "content-encoding": "gzip"}, gzip.compress(request.SerializeToString())),
        (JS, json_body(request)),
    ]
    stats = []
    for headers, body in bodies:
        client, store = _app()
        reply = await client.post("/v1/traces", content=body, headers=headers)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == headers["content-type"]
        if headers is JS:
            assert reply.json() == {}
        else:
            assert not ExportTraceServiceResponse.FromString(reply.content).HasField(
                "partial_success"
            )
        stats.append([store.stat(EP1, "exec_ms", st, 300, NOW) for st in ("p50", "p95", "max")])
    assert stats[0] == stats[1] == stats[2]
    p95 = stats[0][1]
    assert p95.samples == 20
    assert p95.value == pytest.approx(1900.0, rel=0.01)


async def test_spans_from_the_opentelemetry_sdk_are_read() -> None:
    """Spans made by the OpenTelemetry SDK, as the prober makes them (ERROR status on a
    failure), encoded by its OTLP encoder, count as jobs and failures."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i in range(4):
        span = tracer.start_span(
            "runpod.job",
            kind=SpanKind.CLIENT,
            start_time=round((NOW - 2) * 1e9),
            attributes=job_attrs(exec_ms=500.0 + i),
        )
        if i == 0:
            span.set_status(StatusCode.ERROR, "failed: boom")
        span.end(end_time=round(NOW * 1e9))
    body = encode_spans(exporter.get_finished_spans()).SerializeToString()
    client, store = _app()
    reply = await client.post("/v1/traces", content=body, headers=PB)
    assert reply.status_code == 200
    assert store.stat(EP1, "fail_rate", "rate", 60, NOW).value == pytest.approx(0.25)
    assert store.stat(EP1, "exec_ms", "p50", 60, NOW).samples == 3


async def test_spans_it_cannot_use_are_rejected_in_partial_success() -> None:
    """A runpod.job span without an endpoint, with a string latency, NaN, or an end outside
    the windows is dropped and counted: 200 with partial_success naming why; the good span
    counts and spans of other kinds are ignored, not rejected."""
    bad_exec = {**job_attrs(), "runpod.execution_ms": "slow"}
    no_endpoint = {k: v for k, v in job_attrs().items() if k != "runpod.endpoint.id"}
    specs = [
        SpanSpec(job_attrs()),
        SpanSpec(bad_exec),
        SpanSpec(no_endpoint),
        SpanSpec({**job_attrs(), "runpod.delay_ms": float("nan")}),
        SpanSpec(job_attrs(), end_s=NOW - 7200),
        SpanSpec(job_attrs(), end_s=NOW + 3600),
        SpanSpec({"http.method": "GET"}, name="GET /"),
    ]
    dropped_before = m.SPANS_DROPPED.labels(reason="bad_attribute")._value.get()
    for headers, body in (
        (PB, proto_request(specs).SerializeToString()),
        (JS, json_body(proto_request(specs))),
    ):
        client, store = _app()
        reply = await client.post("/v1/traces", content=body, headers=headers)
        assert reply.status_code == 200
        if headers is JS:
            partial = reply.json()["partialSuccess"]
            rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
        else:
            ps = ExportTraceServiceResponse.FromString(reply.content).partial_success
            rejected, message = ps.rejected_spans, ps.error_message
        assert rejected == 5
        assert "runpod.execution_ms must be a number, got str" in message
        assert "without runpod.endpoint.id" in message
        assert "runpod.delay_ms must be a finite number" in message
        assert "before the longest window" in message
        assert "in the future" in message
        assert store.stat(EP1, "exec_ms", "p50", 300, NOW).samples == 1
    assert m.SPANS_DROPPED.labels(reason="bad_attribute")._value.get() == dropped_before + 4


async def test_a_genai_span_adds_only_a_tokens_per_second_sample() -> None:
    """The worker's GenAI span counts tokens/s for the endpoint on its resource (its own
    attribute, else output tokens over its duration) and no job, exec or failure; without
    an endpoint it is ignored."""
    genai = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "qwen",
        "gen_ai.usage.output_tokens": 100,
    }
    specs = [
        SpanSpec(genai, name="chat qwen", duration_s=2.0, resource={"runpod.endpoint.id": "ep1"}),
        SpanSpec(
            {**genai, "podpulse.tokens_per_second": 10.0},
            name="chat qwen",
            resource={"runpod.endpoint.id": "ep1"},
        ),
        SpanSpec(genai, name="chat qwen"),
    ]
    client, store = _app()
    reply = await client.post(
        "/v1/traces", content=proto_request(specs).SerializeToString(), headers=PB
    )
    assert reply.status_code == 200
    assert not ExportTraceServiceResponse.FromString(reply.content).HasField("partial_success")
    tps = store.stat(EP1, "tokens_per_s", "max", 60, NOW)
    assert tps.samples == 2
    assert tps.value == pytest.approx(50.0, rel=0.01)
    assert store.stat(EP1, "fail_rate", "rate", 60, NOW).samples == 0
    assert store.stat(EP1, "exec_ms", "p50", 60, NOW).samples == 0


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        (PB, b"\x0a\xff\xff\xff", 400, "not a protobuf ExportTraceServiceRequest"),
        (JS, b"{not json", 400, "not JSON"),
        (JS, b'{"resourceSpans": {}}', 400, "body.resourceSpans: expected an array"),
        (
            JS,
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {"spans": [{"name": "runpod.job", "endTimeUnixNano": "1e5"}]}
                            ]
                        }
                    ]
                }
            ).encode(),
            400,
            "spans[0].endTimeUnixNano: expected an integer or a decimal string",
        ),
        (
            JS,
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "attributes": [
                                                {
                                                    "key": "x",
                                                    "value": {"intValue": "99999999999999999999"},
                                                }
                                            ]
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ).encode(),
            400,
            "intValue: integer out of range",
        ),
        (JS, b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        ({**PB, "content-encoding": "gzip"}, b"\x1f\x8bnot gzip", 400, "not a gzip stream"),
        (
            {**PB, "content-encoding": "gzip"},
            gzip.compress(b"x" * 1000, mtime=0)[:20],
            400,
            "ends early",
        ),
        ({"content-type": "text/plain"}, b"hi", 415, "content type must be"),
        ({**PB, "content-encoding": "br"}, b"hi", 415, "content encoding must be gzip"),
    ],
)
async def test_a_malformed_request_is_refused_with_its_reason(
    headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    """A body that does not decode is a 400 (415: another type) whose google.rpc.Status, in
    the request's encoding, says why; nothing is counted."""
    client, store = _app()
    reply = await client.post("/v1/traces", content=body, headers=headers)
    assert reply.status_code == status
    if headers.get("content-type") == "application/json":
        message = reply.json()["message"]
    else:
        assert reply.headers["content-type"] == "application/x-protobuf"
        message = Status.FromString(reply.content).message
    assert reason in message
    assert len(store) == 0


async def test_bodies_over_the_limit_are_413_even_when_they_only_grow_once_gunzipped() -> None:
    """Over ALERTER_MAX_BODY_BYTES as sent, or a small gzip that expands past it (a 100 MB
    bomb of 100 kB), is a 413; decompression stops at the limit."""
    client, _ = _app(max_body_bytes=128 * 1024)
    big = proto_request(_jobs(4000)).SerializeToString()
    assert len(big) > 128 * 1024
    reply = await client.post("/v1/traces", content=big, headers=PB)
    assert reply.status_code == 413
    bomb = gzip.compress(b"\0" * 100_000_000, compresslevel=9)
    assert len(bomb) < 128 * 1024
    reply = await client.post(
        "/v1/traces", content=bomb, headers={**PB, "content-encoding": "gzip"}
    )
    assert reply.status_code == 413
    assert "once gunzipped" in Status.FromString(reply.content).message


async def test_a_configured_bearer_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ALERTER_RECEIVER_TOKEN set, a request without it, or with another, is a 401; with
    it, a 200; unset, no token is needed."""
    client, _ = _app()
    body = proto_request(_jobs(1)).SerializeToString()
    assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    monkeypatch.setenv("ALERTER_TEST_TOKEN", "s3cret")
    assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 401
    wrong = {**PB, "authorization": "Bearer nope"}
    assert (await client.post("/v1/traces", content=body, headers=wrong)).status_code == 401
    right = {**PB, "authorization": "Bearer s3cret"}
    assert (await client.post("/v1/traces", content=body, headers=right)).status_code == 200


async def test_a_subnormal_execution_time_refuses_that_span_alone() -> None:
    """A runpod.job span with runpod.execution_ms 5e-324 and output tokens (no tokens/s) is
    refused alone in partial_success; the spans before and after it count, once."""
    tiny = {**job_attrs(tokens_per_s=None), "runpod.execution_ms": 5e-324}
    specs = [SpanSpec(job_attrs()), SpanSpec(tiny), SpanSpec(job_attrs())]
    client, store = _app()
    body = proto_request(specs).SerializeToString()
    reply = await client.post("/v1/traces", content=body, headers=PB)
    assert reply.status_code == 200
    ps = ExportTraceServiceResponse.FromString(reply.content).partial_success
    assert ps.rejected_spans == 1
    assert "execution_ms too small" in ps.error_message
    assert store.stat(EP1, "fail_rate", "rate", 300, NOW).samples == 2
    assert store.stat(EP1, "tokens_per_s", "max", 300, NOW).samples == 2


async def test_the_series_cap_evicts_the_idlest_series_and_counts_it() -> None:
    """Past ALERTER_MAX_SERIES the least recently fed series goes, counted as evicted."""
    client, store = _app(max_series=3)
    evicted_before = m.SERIES_EVICTED._value.get()
    for endpoint in ("a", "b", "c", "a", "d", "e"):
        body = proto_request([SpanSpec(job_attrs(endpoint))]).SerializeToString()
        assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    assert store.series(NOW) == [SeriesKey(e, "qwen") for e in ("a", "d", "e")]
    assert m.SERIES_EVICTED._value.get() == evicted_before + 2


async def test_metrics_show_window_statistics_and_the_ingest_counters() -> None:
    """GET /metrics: exec/delay/total/tokens quantiles and fail rate per series, computed
    from the windows, next to the spans received and dropped counters."""
    client, _ = _app()
    specs = [*_jobs(10), SpanSpec(job_attrs(status="FAILED"), error=True)]
    body = proto_request(specs).SerializeToString()
    assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    text = (await client.get("/metrics")).text
    p95 = re.search(r'podpulse_exec_ms\{endpoint="ep1",model="qwen",quantile="0.95"\} (\S+)', text)
    assert p95 is not None
    assert float(p95.group(1)) == pytest.approx(1000.0, rel=0.01)  # the failed job's is not in
    assert 'podpulse_window_jobs{endpoint="ep1",model="qwen"} 11.0' in text
    assert 'podpulse_fail_rate{endpoint="ep1",model="qwen"} 0.0909' in text
    assert "podpulse_alerter_spans_received_total" in text
    assert "# TYPE podpulse_alerter_spans_dropped_total counter" in text


async def test_the_bearer_scheme_is_case_insensitive(monkeypatch) -> None:
    """`Authorization: bearer <token>` (any case of the scheme) is accepted; the token
    itself is compared exactly."""
    monkeypatch.setenv("ALERTER_TEST_TOKEN", "s3cret")
    client, store = _app()
    body = proto_request(_jobs(1)).SerializeToString()
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {**PB, "authorization": f"{scheme} s3cret"}
        assert (await client.post("/v1/traces", content=body, headers=headers)).status_code == 200
    wrong = {**PB, "authorization": "bearer S3CRET"}
    assert (await client.post("/v1/traces", content=body, headers=wrong)).status_code == 401
    assert store.stat(EP1, "exec_ms", "p50", 300, NOW).samples == 3


async def test_metrics_answer_with_the_counters_while_redis_is_down() -> None:
    """With the window store's Redis unreachable, GET /metrics is 200 with the in-process
    counters (and no window statistics)."""
    s = settings()
    store = RedisWindowStore(
        redis.Redis(port=1, socket_connect_timeout=0.2),
        prefix="podpulse-test:down:",
        bucket_s=s.bucket_s,
        retention_s=s.retention_s,
        max_series=s.max_series,
        clock=lambda: NOW,
    )
    app = create_ingest_app(s, store, clock=lambda: NOW, token=Secret("ALERTER_TEST_TOKEN"))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert "podpulse_alerter_spans_received_total" in reply.text
    assert "podpulse_exec_ms" not in reply.text


def test_a_client_gone_mid_body_is_one_line_not_a_traceback(caplog) -> None:
    """A client that sends half its body and hangs up is counted as a 499 and logged
    without a traceback; the server answers the next export."""
    s = settings()
    store = MemoryWindowStore(
        bucket_s=s.bucket_s, retention_s=s.retention_s, max_series=10, clock=lambda: NOW
    )
    app = create_ingest_app(s, store, clock=lambda: NOW, token=Secret("ALERTER_TEST_TOKEN"))
    gone = m.OTLP_REQUESTS.labels(code="499")
    before = gone._value.get()
    with serve(app) as url:
        # uvicorn's loggers do not propagate to the root, where caplog listens.
        uvicorn_error = logging.getLogger("uvicorn.error")
        uvicorn_error.addHandler(caplog.handler)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: a\r\n"
                         b"Content-Type: application/x-protobuf\r\n"
                         b"Content-Length: 1000\r\n\r\n0123456789")  # fmt: skip
        wait_until(lambda: gone._value.get() > before, timeout_s=20, what="the 499")
        body = proto_request(_jobs(1)).SerializeToString()
        assert httpx.post(f"{url}/v1/traces", content=body, headers=PB).status_code == 200
        uvicorn_error.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_more_spans_than_the_cap_is_413_and_counts_none() -> None:
    """Past ALERTER_MAX_SPANS_PER_REQUEST spans a request is 413 (protobuf and JSON) and
    none of its spans count; at the cap it is taken."""
    client, store = _app(max_spans_per_request=5)
    for headers, body in (
        (PB, proto_request(_jobs(6)).SerializeToString()),
        (JS, json_body(proto_request(_jobs(6)))),
    ):
        reply = await client.post("/v1/traces", content=body, headers=headers)
        assert reply.status_code == 413
        assert store.stat(EP1, "exec_ms", "p50", 300, NOW).samples == 0
    body = proto_request(_jobs(5)).SerializeToString()
    assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    assert store.stat(EP1, "exec_ms", "p50", 300, NOW).samples == 5


class _GatedStore(MemoryWindowStore):
    """A memory store whose add() waits until the test lets it go (it says when it waits)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def add(self, observation: Observation) -> None:
        self.entered.set()
        self.release.wait(timeout=60)
        super().add(observation)


def test_the_loop_answers_while_a_batch_is_being_counted() -> None:
    """While one export's spans are being counted, /-/healthy and /metrics are answered:
    decoding and counting run off the event loop."""
    s = settings()
    store = _GatedStore(
        bucket_s=s.bucket_s, retention_s=s.retention_s, max_series=10, clock=lambda: NOW
    )
    app = create_ingest_app(s, store, clock=lambda: NOW, token=Secret("ALERTER_TEST_TOKEN"))
    body = proto_request(_jobs(3)).SerializeToString()
    replies: list[int] = []
    with serve(app) as url:
        export = threading.Thread(
            target=lambda: replies.append(
                httpx.post(f"{url}/v1/traces", content=body, headers=PB, timeout=60).status_code
            )
        )
        export.start()
        try:
            assert store.entered.wait(timeout=30)
            assert httpx.get(f"{url}/-/healthy", timeout=30).status_code == 200
            assert replies == []  # the export is still being counted
        finally:
            store.release.set()
            export.join(timeout=60)
    assert replies == [200]
    assert store.stat(EP1, "exec_ms", "p50", 300, NOW).samples == 3


def test_bodies_past_the_bytes_in_flight_budget_are_503_until_one_ends() -> None:
    """With one connection holding a declared 4000-byte body and a 4096-byte budget, another
    export is a retryable 503; once that connection goes, exports are taken again."""
    s = settings(max_body_bytes=4096, max_body_bytes_in_flight=4096)
    store = MemoryWindowStore(
        bucket_s=s.bucket_s, retention_s=s.retention_s, max_series=10, clock=lambda: NOW
    )
    app = create_ingest_app(s, store, clock=lambda: NOW, token=Secret("ALERTER_TEST_TOKEN"))
    body = proto_request(_jobs(1)).SerializeToString()
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])

        def export() -> int:
            return httpx.post(f"{url}/v1/traces", content=body, headers=PB).status_code

        assert export() == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as holder:
            holder.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: a\r\n"
                           b"Content-Type: application/x-protobuf\r\n"
                           b"Content-Length: 4000\r\n\r\n0123456789")  # fmt: skip
            wait_until(lambda: export() == 503, timeout_s=20, what="a 503 while held")
        wait_until(lambda: export() == 200, timeout_s=20, what="a 200 once released")
    assert store.stat(EP1, "exec_ms", "p50", 300, NOW).samples == 2


class _SilentRedis:
    """A TCP server that takes connections and never answers: a Redis stopped mid-flight."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                self.accepted.append(self.listener.accept()[0])

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_the_loop_answers_while_redis_hangs() -> None:
    """With the serving alerter's Redis accepting connections and never answering, once both
    the evaluation and the delivery are waiting on it, /-/healthy is still answered."""
    from podpulse.alerter._rules._yaml import default_rules
    from podpulse.alerter._serve import create_serving_app

    silent = _SilentRedis()
    client = redis.Redis(port=silent.port, socket_timeout=60, retry=Retry(NoBackoff(), 0))
    app = create_serving_app(client, settings(), default_rules())
    try:
        with serve(app) as url:
            # One connection for the evaluation (in a thread), one for the delivery's lock.
            wait_until(lambda: len(silent.accepted) >= 2, timeout_s=30, what="two Redis calls")
            assert httpx.get(f"{url}/-/healthy", timeout=30).status_code == 200
            silent.close()  # the hanging calls fail at once, so the server can stop
    finally:
        silent.close()


async def test_the_outbox_waits_for_a_hanging_redis_off_the_loop() -> None:
    """The outbox's Redis calls run in a thread: while Redis takes the connection and never
    answers, the event loop goes on; the pass fails once Redis goes away."""
    from podpulse.alerter._notify._outbox import DeliveryMetrics, Outbox
    from podpulse.common.retry import Backoff

    silent = _SilentRedis()
    client = redis.Redis(port=silent.port, socket_timeout=10, retry=Retry(NoBackoff(), 0))
    outbox = Outbox(client, "podpulse:test:", [], metrics=DeliveryMetrics(), backoff=Backoff())
    try:
        delivering = asyncio.create_task(outbox.deliver_due(NOW))
        while not silent.accepted:  # this coroutine gets its turns: the loop is not held
            await asyncio.sleep(0.01)
        assert not delivering.done()
        silent.close()
        with pytest.raises(redis.RedisError):
            await delivering
    finally:
        silent.close()
