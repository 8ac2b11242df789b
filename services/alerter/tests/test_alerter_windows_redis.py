"""Windows merged through real Redis: two ingest apps on loopback give one app's verdicts."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest
import redis
from ingest_helpers import SpanSpec, job_attrs, proto_request, serve, settings, unique_prefix
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from podpulse.alerter import (
    METRICS,
    STATS,
    MemoryWindowStore,
    Observation,
    RedisWindowStore,
    SeriesKey,
    StatValue,
    WindowStore,
    create_ingest_app,
)
from podpulse.common.settings import Secret
from podpulse.common.testing import wait_until

KEY = SeriesKey("ep1", "qwen")
PB = {"content-type": "application/x-protobuf"}


def _store(url: str, prefix: str) -> RedisWindowStore:
    return RedisWindowStore(
        redis.Redis.from_url(url),
        prefix=prefix,
        bucket_s=10.0,
        retention_s=3600.0,
        max_series=100,
        clock=time.time,
    )


def _spans(now: float) -> list[SpanSpec]:
    """120 jobs over the last 10 minutes: spread latencies, some failures, two endpoints;
    every third one streamed (time to first token and per output token, in seconds)."""
    specs = []
    for i in range(120):
        failed = i % 17 == 0
        attrs = job_attrs(
            "ep1" if i % 5 else "ep2",
            exec_ms=50.0 + (i * 37) % 4000,
            delay_ms=float((i * 13) % 2500),
            total_ms=3000.0 + (i * 53) % 5000,
            tokens_per_s=20.0 + i % 30,
            status="FAILED" if failed else "COMPLETED",
        )
        if i % 3 == 0:
            attrs["gen_ai.server.time_to_first_token"] = 0.2 + (i * 29) % 2900 / 1000
            attrs["gen_ai.server.time_per_output_token"] = 0.01 + i % 60 / 1000
        specs.append(SpanSpec(attrs, end_s=now - i * 5, error=failed))
    return specs


def _all_stats(store: WindowStore, now: float) -> dict[tuple[str, str, str, float], StatValue]:
    out: dict[tuple[str, str, str, float], StatValue] = {}
    for key, metric, stat, window in itertools.product(
        [KEY, SeriesKey("ep2", "qwen")], METRICS, STATS, (60.0, 300.0, 900.0)
    ):
        out[(key.endpoint, metric, stat, window)] = store.stat(key, metric, stat, window, now)
    return out


def test_two_ingest_apps_fed_halves_give_the_same_stats_as_one_fed_all(redis_url: str) -> None:
    """Two uvicorn ingest apps sharing Redis, each POSTed every other span, give exactly the
    stat() of one app fed every span, for every metric, statistic and window, as read
    by a third process-like store that received nothing."""
    now = time.time()
    specs = _spans(now)
    prefix = unique_prefix("two")
    s = settings(flush_interval_s=0.2)
    one = MemoryWindowStore(bucket_s=10.0, retention_s=3600.0, max_series=100, clock=time.time)
    stores = [_store(redis_url, prefix), _store(redis_url, prefix)]
    apps = [create_ingest_app(s, st, token=Secret("ALERTER_TEST_TOKEN")) for st in stores]
    with serve(apps[0]) as url_a, serve(apps[1]) as url_b:
        for n, url in enumerate((url_a, url_b)):
            half = proto_request(specs[n::2]).SerializeToString()
            assert httpx.post(f"{url}/v1/traces", content=half, headers=PB).status_code == 200
        single = create_ingest_app(settings(), one)
        with serve(single) as url_one:
            whole = proto_request(specs).SerializeToString()
            assert httpx.post(f"{url_one}/v1/traces", content=whole, headers=PB).status_code == 200
        reader = _store(redis_url, prefix)
        expected = _all_stats(one, now)
        wait_until(
            lambda: _all_stats(reader, now) == expected,
            timeout_s=20,
            what="both apps' buckets flushed and merged",
        )
        assert reader.series(now) == [KEY, SeriesKey("ep2", "qwen")]
        text = httpx.get(f"{url_a}/metrics").text
        assert 'podpulse_window_jobs{endpoint="ep1",model="qwen"}' in text
    assert expected[("ep1", "exec_ms", "p95", 900.0)].samples > 50
    assert expected[("ep1", "ttft_ms", "p95", 900.0)].samples > 15
    assert expected[("ep1", "tpot_ms", "p95", 900.0)].samples > 15


def test_a_repeated_or_failed_flush_never_counts_twice_or_loses(redis_url: str) -> None:
    """Flushes write whole counts: flushing again adds nothing, and buckets whose write
    failed (Redis unreachable) are written at the next flush."""
    now = time.time()
    prefix = unique_prefix("flush")
    store = _store(redis_url, prefix)
    from podpulse.alerter._ingest._otlp import decode_protobuf
    from podpulse.alerter._ingest._reader import SpanReader

    reader = SpanReader(retention_s=3600, max_clock_skew_s=60)
    for span in decode_protobuf(proto_request(_spans(now)).SerializeToString()):
        obs = reader.read(span, now)
        assert isinstance(obs, Observation)
        store.add(obs)
    assert store.flush() > 0
    first = store.stat(KEY, "exec_ms", "p95", 900, now)
    assert store.flush() == 0
    store.local.mark_dirty(store.local.buckets())
    assert store.flush() > 0
    assert store.stat(KEY, "exec_ms", "p95", 900, now) == first

    broken = RedisWindowStore(
        redis.Redis(port=1, socket_connect_timeout=0.2),
        prefix=prefix,
        bucket_s=10.0,
        retention_s=3600.0,
        max_series=100,
        clock=time.time,
        writer_id="late",
    )
    span = next(iter(decode_protobuf(proto_request(_spans(now)[1:2]).SerializeToString())))
    late = reader.read(span, now)
    assert isinstance(late, Observation)
    broken.add(late)
    with pytest.raises(redis.ConnectionError):
        broken.flush()
    broken._client = redis.Redis.from_url(redis_url)
    assert broken.flush() == 1
    assert store.stat(KEY, "exec_ms", "p95", 900, now).samples == first.samples + 1


def test_the_opentelemetry_otlp_http_exporter_delivers_to_a_served_ingest_app(
    redis_url: str,
) -> None:
    """The SDK's own OTLP/HTTP exporter (protobuf, gzip) sends runpod.job spans to a
    uvicorn-served ingest app; they reach the Redis-merged windows."""
    prefix = unique_prefix("sdk")
    store = _store(redis_url, prefix)
    app = create_ingest_app(
        settings(flush_interval_s=0.2), store, token=Secret("ALERTER_TEST_TOKEN")
    )
    with serve(app) as url:
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        for i in range(5):
            with tracer.start_as_current_span(
                "runpod.job", kind=SpanKind.CLIENT, attributes=job_attrs(exec_ms=100.0 * i)
            ):
                pass
        provider.shutdown()
        reader = _store(redis_url, prefix)
        got = wait_until(
            lambda: reader.stat(KEY, "exec_ms", "max", 60, time.time()).samples == 5 or None,
            timeout_s=20,
            what="five exported spans in Redis",
        )
        assert got
        assert reader.stat(KEY, "exec_ms", "max", 60, time.time()).value == pytest.approx(
            400.0, rel=0.01
        )


def test_an_evicted_series_fed_again_adds_to_its_flushed_counts(redis_url: str) -> None:
    """With room for one series, 8 jobs of A flushed, B evicting A before a flush, then 2
    more jobs of A in the same bucket: Redis holds A's 10 and B's 1, and both evictions
    are counted in podpulse_alerter_series_evicted_total."""
    from podpulse.alerter._ingest import _metrics as m
    from podpulse.alerter._pipeline import window_store

    now = time.time()
    conf = settings(max_series=1, bucket_s=60.0, redis_prefix=unique_prefix("evict"))
    store = window_store(redis.Redis.from_url(redis_url), conf, clock=lambda: now)
    a, b = SeriesKey("a", "qwen"), SeriesKey("b", "qwen")
    evicted_before = m.SERIES_EVICTED._value.get()

    def feed(key: SeriesKey, jobs: int) -> None:
        for _ in range(jobs):
            store.add(Observation(series=key, at=now, failed=False, exec_ms=100.0))

    feed(a, 8)
    store.flush()
    feed(b, 1)  # evicts a
    feed(a, 2)  # evicts b, whose job was never flushed
    store.flush()
    assert store.merged(a, 60, now).jobs == 10
    assert store.merged(b, 60, now).jobs == 1
    assert m.SERIES_EVICTED._value.get() == evicted_before + 2
