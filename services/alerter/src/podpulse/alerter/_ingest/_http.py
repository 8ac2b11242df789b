"""The OTLP/HTTP input: ``POST /v1/traces`` into the windows, ``GET /metrics`` out.

As opentelemetry-proto's ``docs/specification.md`` (OTLP/HTTP) asks: binary protobuf
(``application/x-protobuf``) and JSON (``application/json``) on one path, optionally gzip
(``Content-Encoding: gzip``); the reply has the request's content type; success is 200 with
an ``ExportTraceServiceResponse``, whose ``partial_success`` (``rejected_spans``,
``error_message``) is set when some spans were dropped; failures carry a ``google.rpc.Status``
with the reason: 400 for a body that does not decode (not retryable), 401 for a missing or
wrong bearer token, 413 for a body over ``ALERTER_MAX_BODY_BYTES`` (20 MiB by default, the
spec's recommendation), before *or after* gunzip (decompression stops at the limit, so a gzip
bomb never expands past it), 413 too for more than ``ALERTER_MAX_SPANS_PER_REQUEST`` spans,
408 for one still arriving after ``ALERTER_BODY_TIMEOUT_S``, 415 for another content type or
encoding, and 503 (retryable) when the bodies held across all connections would pass
``ALERTER_MAX_BODY_BYTES_IN_FLIGHT``. The body is read by ``podpulse.common.http_body``, the
twin's reader too; it is decoded and its spans counted in a worker thread, so the event loop
keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Protocol

import anyio
import redis
import structlog
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from podpulse.common.http_body import BodyRefused, read_body
from podpulse.common.settings import ALERTER_RECEIVER_TOKEN, Secret, SecretError

from .._windows._contract import Observation, SeriesKey
from .._windows._memory import Bucket
from ..settings import AlerterSettings
from . import _metrics as m
from ._otlp import OtlpError, RawSpan, TooManySpans, decode_json, decode_protobuf
from ._reader import Rejection, SpanReader

__all__ = ["create_ingest_app"]

log = structlog.get_logger("podpulse.alerter")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# google.rpc.Code values; OTLP clients do not act on them, people reading replies may.
_CODES = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 503: 14}
_MAX_MESSAGES = 5  # distinct rejection messages quoted in one partial_success


class IngestStore(Protocol):
    """What ingest needs of a window store (``MemoryWindowStore``, ``RedisWindowStore``)."""

    def add(self, observation: Observation) -> None: ...

    def series(self, now: float) -> list[SeriesKey]: ...

    def merged(self, key: SeriesKey, window_s: float, now: float) -> Bucket: ...


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _reply(
    status: int,
    content_type: str,
    message: ExportTraceServiceResponse | Status,
    as_json: Mapping[str, object],
) -> Response:
    m.OTLP_REQUESTS.labels(code=str(status)).inc()
    if content_type == JSON:
        # ASCII JSON: a message quoting a span's name may hold a lone surrogate.
        return Response(json.dumps(as_json).encode(), status_code=status, media_type=JSON)
    return Response(message.SerializeToString(), status_code=status, media_type=PROTOBUF)


def _failure(status: int, content_type: str, message: str, *, close: bool = False) -> Response:
    code = _CODES.get(status, 2)
    reply = _reply(
        status, content_type, Status(code=code, message=message), {"code": code, "message": message}
    )
    if close:
        reply.headers["Connection"] = "close"
    return reply


def _check_token(request: Request, token: Secret) -> None:
    try:
        expected = token.get()
    except SecretError as exc:
        # Our fault, not the client's: retryable, and the reason is in the log.
        log.error("receiver.token_unreadable", error=str(exc))  # noqa: TRY400 (no traceback)
        raise _Refused(503, "the receiver's token cannot be read") from None
    if expected is None:
        return
    # RFC 9110 §11.1: the scheme is case-insensitive ("bearer" is "Bearer").
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    right = hmac.compare_digest(given.strip().encode(), expected.encode())
    if scheme.lower() != "bearer" or not right:
        raise _Refused(401, "missing or wrong bearer token")


def _media_type(request: Request) -> str:
    raw = request.headers.get("content-type", "")
    return raw.split(";", 1)[0].strip().lower()


def _partial(rejections: list[Rejection]) -> str:
    seen: dict[str, int] = {}
    for r in rejections:
        seen[r.message] = seen.get(r.message, 0) + 1
    parts = [f"{n} x {msg}" for msg, n in list(seen.items())[:_MAX_MESSAGES]]
    more = len(seen) - _MAX_MESSAGES
    tail = f"; and {more} other reasons" if more > 0 else ""
    return f"{len(rejections)} spans rejected: " + "; ".join(parts) + tail


def ingest(
    spans: Iterator[RawSpan], reader: SpanReader, store: IngestStore, now: float
) -> list[Rejection]:
    """Count each span's observation in the store; the rejections, in order.

    All or nothing: every span is decoded and read before the first is counted, so a batch
    that fails part-way (a body that stops decoding, a bug) counts none of its spans, and the
    client's retry of it cannot count any twice.
    """
    rejections: list[Rejection] = []
    observations: list[Observation] = []
    received = ignored = 0
    for span in spans:
        received += 1
        result = reader.read(span, now)
        if result is None:
            ignored += 1
        elif isinstance(result, Rejection):
            rejections.append(result)
        else:
            observations.append(result)
    for observation in observations:
        store.add(observation)
    for rejection in rejections:
        m.SPANS_DROPPED.labels(reason=rejection.reason).inc()
    m.SPANS_RECEIVED.inc(received)
    m.SPANS_ACCEPTED.inc(len(observations))
    m.SPANS_IGNORED.inc(ignored)
    return rejections


class _TracesEndpoint:
    """POST /v1/traces, with what it reads spans with and counts them in."""

    def __init__(
        self,
        settings: AlerterSettings,
        store: IngestStore,
        clock: Callable[[], float],
        token: Secret,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.token = token
        # Body bytes reserved by requests being read or decoded (touched on the loop only).
        self.in_flight = 0
        self.reader = SpanReader(
            retention_s=settings.retention_s,
            max_clock_skew_s=settings.max_clock_skew_s,
            accept_twin_spans=settings.accept_twin_spans,
            accept_genai_spans=settings.accept_genai_spans,
        )

    async def export(self, request: Request) -> Response:
        """POST /v1/traces: OTLP/HTTP export, protobuf or JSON, gzip or not."""
        media = _media_type(request)
        reply_type = JSON if media == JSON else PROTOBUF
        try:
            rejections = await self._ingest(request, media)
        except TooManySpans as exc:
            return _failure(413, reply_type, str(exc))
        except (_Refused, BodyRefused) as refused:
            # Every refusal answers before the body was read through: a connection holding
            # unread bytes cannot carry another request, and kept open it would let a client
            # trickle the rest in with no timeout (uvicorn re-arms its idle timer only after a
            # response it has read the whole request for).
            return _failure(refused.status, reply_type, refused.message, close=True)
        except OtlpError as exc:
            return _failure(400, reply_type, str(exc))
        except ClientDisconnect:
            # A client gone mid-body is its own affair (its exporter retries): one line, no
            # traceback, and nginx's 499 in the request counter. Nobody reads the reply.
            log.info("receiver.client_gone")
            m.OTLP_REQUESTS.labels(code="499").inc()
            return Response(status_code=499)
        if not rejections:
            return _reply(200, reply_type, ExportTraceServiceResponse(), {})
        message = _partial(rejections)
        response = ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(
                rejected_spans=len(rejections), error_message=message
            )
        )
        as_json = {
            "partialSuccess": {"rejectedSpans": str(len(rejections)), "errorMessage": message}
        }
        return _reply(200, reply_type, response, as_json)

    async def _ingest(self, request: Request, media: str) -> list[Rejection]:
        if media not in (JSON, PROTOBUF):
            raise _Refused(415, f"content type must be {PROTOBUF} or {JSON}")
        _check_token(request, self.token)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise _Refused(415, f"content encoding must be gzip or none, not {encoding!r}")
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        # What this body may hold in memory until its spans are counted: its declared size,
        # or the limit when gunzipped or of unknown length (read_body enforces both).
        size = limit
        if encoding != "gzip" and declared is not None and declared.strip().isdigit():
            size = min(int(declared), limit)
        if self.in_flight + size > self.settings.max_body_bytes_in_flight:
            raise _Refused(503, "too many request bytes in flight; retry later")
        self.in_flight += size
        try:
            body = await read_body(
                request.stream(),
                limit=limit,
                timeout_s=self.settings.body_timeout_s,
                declared=declared,
                gunzip=encoding == "gzip",
            )
            # Decoding and reading tens of MB of spans takes seconds of CPU: in a thread, so
            # the loop keeps answering (/-/healthy, other exports) meanwhile.
            return await anyio.to_thread.run_sync(self._count, body, media)
        finally:
            self.in_flight -= size

    def _count(self, body: bytes, media: str) -> list[Rejection]:
        cap = self.settings.max_spans_per_request
        spans = (
            decode_json(body, max_spans=cap)
            if media == JSON
            else decode_protobuf(body, max_spans=cap)
        )
        return ingest(spans, self.reader, self.store, self.clock())


def _lifespan(
    store: IngestStore, interval_s: float
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    flush: Callable[[], int] | None = getattr(store, "flush", None)

    async def flush_once() -> None:
        assert flush is not None
        try:
            await anyio.to_thread.run_sync(flush)
        except redis.RedisError as exc:
            m.FLUSH_ERRORS.inc()
            log.warning("receiver.flush_failed", error=str(exc))

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await flush_once()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if flush is None:
            yield
            return
        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await flush_once()

    return lifespan


def create_ingest_app(
    settings: AlerterSettings,
    store: IngestStore,
    *,
    clock: Callable[[], float] = time.time,
    token: Secret = ALERTER_RECEIVER_TOKEN,
    collectors: Sequence[Collector] = (),
) -> Starlette:
    """The OTLP/HTTP input as a Starlette app (mountable; ``uvicorn`` serves it as the twin is).

    A store with a ``flush()`` (``RedisWindowStore``) is flushed every
    ``ALERTER_FLUSH_INTERVAL_S`` in a thread, and once more on shutdown. *collectors* are
    rendered on ``/metrics`` after the window statistics (the serving alerter's ``ALERTS``
    and the evaluator's and outbox's counters).
    """
    endpoint = _TracesEndpoint(settings, store, clock, token)
    # One registry per collector: one that reads Redis and fails leaves out only its own
    # families, never the in-process counters (which say what is wrong while Redis is down).
    registries = []
    for collector in (
        m.WindowCollector(store, window_s=settings.metrics_window_s, clock=clock),
        *collectors,
    ):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        registries.append(registry)

    def metrics(request: Request) -> Response:
        """GET /metrics: Prometheus text; sync, so a Redis read runs in the thread pool."""
        return Response(m.render(registries), media_type=CONTENT_TYPE_LATEST)

    async def healthy(request: Request) -> Response:
        """GET /-/healthy: the process answers."""
        return Response("ok\n", media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/v1/traces", endpoint.export, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/-/healthy", healthy, methods=["GET"]),
        ],
        lifespan=_lifespan(store, settings.flush_interval_s),
    )
    app.state.store = store
    app.state.reader = endpoint.reader
    return app
