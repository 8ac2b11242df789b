"""OTLP fuzzing: generated and mutated bodies never get a 5xx, and memory stays bounded."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_helpers import NOW, SpanSpec, job_attrs, json_body, proto_request
from ingest_helpers import settings as alerter_settings

from podpulse.alerter import MemoryWindowStore, create_ingest_app
from podpulse.common.histogram import BOUNDED_BUCKETS
from podpulse.common.settings import Secret
from podpulse.common.testing import cases

MAX_SERIES = 20
RAN: Counter[str] = Counter()
_LOOP = asyncio.new_event_loop()
_SETTINGS = alerter_settings(max_series=MAX_SERIES, max_body_bytes=256 * 1024)
STORE = MemoryWindowStore(
    bucket_s=10.0, retention_s=3600.0, max_series=MAX_SERIES, clock=lambda: NOW
)
_APP = create_ingest_app(_SETTINGS, STORE, clock=lambda: NOW, token=Secret("ALERTER_FUZZ_T"))
_CLIENT = httpx.AsyncClient(transport=httpx.ASGITransport(app=_APP), base_url="http://r")


def _fuzz(n: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=cases(n), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


_ALLOWED = {200, 400, 413, 415}


def _post(body: bytes, headers: dict[str, str], surface: str) -> int:
    reply = _LOOP.run_until_complete(_CLIENT.post("/v1/traces", content=body, headers=headers))
    RAN[surface] += 1
    assert reply.status_code in _ALLOWED, (reply.status_code, reply.content[:200])
    return reply.status_code


def _bounded() -> None:
    assert len(STORE) <= MAX_SERIES
    if sum(RAN.values()) % 50:  # the full walk is costly; every 50th case is enough
        return
    for key, index in STORE.buckets():
        bucket = STORE._series[key][index]
        assert all(len(h.counts()) <= BOUNDED_BUCKETS for h in bucket.hist.values())


_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
_keys = st.sampled_from(
    [
        "runpod.endpoint.id",
        "runpod.execution_ms",
        "runpod.delay_ms",
        "podpulse.total_ms",
        "runpod.job.status",
        "gen_ai.request.model",
        "gen_ai.usage.output_tokens",
        "podpulse.tokens_per_second",
        "gen_ai.operation.name",
        "podpulse.target.kind",
    ]
) | st.text(max_size=10)
_specs = st.builds(
    SpanSpec,
    attrs=st.dictionaries(_keys, _scalars, max_size=8),
    end_s=st.floats(min_value=NOW - 8000, max_value=NOW + 200),
    name=st.sampled_from(["runpod.job", "chat qwen", "GET /"]),
    duration_s=st.floats(min_value=0, max_value=1e4),
    error=st.booleans(),
    resource=st.dictionaries(st.just("runpod.endpoint.id"), _scalars, max_size=1),
)
_PB = {"content-type": "application/x-protobuf"}
_JS = {"content-type": "application/json"}
_SEED = proto_request([SpanSpec(job_attrs(f"ep{i}")) for i in range(3)]).SerializeToString()


@_fuzz(1500)
@given(specs=st.lists(_specs, max_size=5), as_json=st.booleans(), gzipped=st.booleans())
def test_generated_messages_never_get_a_5xx(
    specs: list[SpanSpec], as_json: bool, gzipped: bool
) -> None:
    """Generated ExportTraceServiceRequests (any attributes, types, NaN, huge ints, times
    inside and outside the windows), as protobuf or JSON, gzipped or not: a 2xx or 4xx."""
    request = proto_request(specs)
    body = json_body(request) if as_json else request.SerializeToString()
    headers = dict(_JS if as_json else _PB)
    if gzipped:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    _post(body, headers, "generated messages")
    _bounded()


@_fuzz(2500)
@given(data=st.data())
def test_mutated_protobuf_bytes_never_get_a_5xx(data: st.DataObject) -> None:
    """A valid protobuf body with bytes flipped, cut, inserted or replaced: never a 5xx."""
    body = bytearray(_SEED)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, max(len(body) - 1, 0)))
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if op == "flip" and body:
            body[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del body[at : at + data.draw(st.integers(1, 16))]
        elif op == "insert":
            body[at:at] = data.draw(st.binary(max_size=16))
        else:
            body = body[:at]
    _post(bytes(body), _PB, "mutated protobuf")
    _bounded()


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(alphabet=st.characters(), max_size=10),
    st.sampled_from(["NaN", "Infinity", "\ud800", "1e5", "-0", "18446744073709551616"]),
)
_json_any = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "doubleValue",
                    "boolValue",
                    "name",
                    "endTimeUnixNano",
                    "startTimeUnixNano",
                    "status",
                    "code",
                    "resource",
                    "arrayValue",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@_fuzz(2500)
@given(shape=_json_any, depth=st.integers(0, 3000))
def test_json_shapes_with_wrong_types_never_get_a_5xx(shape: Any, depth: int) -> None:
    """JSON of any shape (wrong types, NaN, huge ints, lone surrogates, deep nesting)
    near OTLP's keys: a 2xx or 4xx."""
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [shape]}]}]} if depth % 2 else shape
    raw = _dump(body)
    if depth > 1000:
        raw = b"[" * depth + raw + b"]" * depth
    _post(raw, _JS, "JSON shapes")
    _bounded()


@_fuzz(3500)
@given(garbage=st.binary(max_size=200), prefix=st.booleans(), cut=st.integers(0, 400))
def test_gzip_garbage_never_gets_a_5xx(garbage: bytes, prefix: bool, cut: int) -> None:
    """Garbage, or a real gzip stream cut short or followed by garbage, under
    Content-Encoding: gzip: a 400 or 413, never a 5xx."""
    real = gzip.compress(_SEED)
    body = (real[:cut] if cut < len(real) else real + garbage) if prefix else garbage
    assert _post(body, {**_PB, "content-encoding": "gzip"}, "gzip garbage") != 415


def test_zz_report_the_generated_case_counts() -> None:
    """Every generated body ran against one app (10,000 under the deep profile), and it still
    answers."""
    reply = _LOOP.run_until_complete(_CLIENT.get("/metrics"))
    assert reply.status_code == 200
    print(dict(RAN), sum(RAN.values()))  # noqa: T201
    assert sum(RAN.values()) >= sum(cases(n) for n in (1500, 2500, 2500, 3500))
