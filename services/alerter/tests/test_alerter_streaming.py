"""Time to first token and per output token: read from streamed prober spans and the worker's
GenAI spans, kept in the windows, shown on /metrics, and alerted on by the default rules."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from alerter_helpers import recorder
from ingest_helpers import NOW, SpanSpec, job_attrs, json_body, proto_request, serve, settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from podpulse.alerter import MemoryWindowStore, SeriesKey, create_ingest_app
from podpulse.alerter._notify._receivers import WebhookReceiver
from podpulse.alerter._pipeline import Alerter, window_store
from podpulse.alerter._rules._state import StateStore
from podpulse.alerter._rules._yaml import default_rules
from podpulse.common.settings import Secret

PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}
EP1 = SeriesKey("ep1", "qwen")
TTFT = "gen_ai.server.time_to_first_token"
TPOT = "gen_ai.server.time_per_output_token"


def _streamed(ttft_s: Any, tpot_s: Any, **kw: Any) -> dict[str, Any]:
    """A streamed request's runpod.job attributes (total 4 s, so any TTFT here fits in it)."""
    return {**job_attrs(total_ms=4000.0, **kw), TTFT: ttft_s, TPOT: tpot_s}


def _generation(ttft_s: float, tpot_s: float) -> dict[str, Any]:
    """The worker's `chat qwen` span attributes, with its own first token and decode pace."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "qwen",
        "gen_ai.usage.output_tokens": 100,
        TTFT: ttft_s,
        TPOT: tpot_s,
    }


def _mixed(ttft_s: float, tpot_s: float, ends: list[float]) -> list[SpanSpec]:
    """Prober and worker spans alternately, all of endpoint ep1, model qwen."""
    resource = {"runpod.endpoint.id": "ep1"}
    return [
        SpanSpec(_streamed(ttft_s, tpot_s), end_s=end)
        if n % 2
        else SpanSpec(_generation(ttft_s, tpot_s), name="chat qwen", end_s=end, resource=resource)
        for n, end in enumerate(ends)
    ]


def _quantile(text: str, family: str, endpoint: str) -> float | None:
    pattern = rf'{family}\{{endpoint="{endpoint}",model="qwen",quantile="0.95"\}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


async def test_streamed_spans_fire_ttft_and_tpot_alerts_and_their_recovery_resolves_them(
    redis_client, key_prefix
) -> None:
    """Through the OTLP receiver on loopback into Redis: streamed spans over 2 s to first token
    and 50 ms a token fire TtftP95High and TpotP95High (default rules) to a real webhook, shown
    on /metrics; fast spans a minute later resolve both. Whole answers (ep2) leave both rules
    in no_data and put no ttft/tpot series on /metrics."""
    t0 = float(int(time.time()) // 2 * 2)  # an evaluation slot; Redis keys expire from now
    clock = [t0]
    s = settings(redis_prefix=key_prefix + "w:", state_prefix=key_prefix, flush_interval_s=3600)
    store = window_store(redis_client, s, clock=lambda: clock[0])
    app = create_ingest_app(s, store, clock=lambda: clock[0], token=Secret("ALERTER_TEST_TOKEN"))
    slow = _mixed(3.0, 0.080, [t0 - 20 + i for i in range(16)])
    whole = [SpanSpec(job_attrs("ep2"), end_s=t0 - 20 + i) for i in range(12)]
    with recorder() as hook, serve(app) as url:
        async with httpx.AsyncClient() as http:
            receiver = WebhookReceiver(http, lambda: hook.url)
            alerter = Alerter.build(redis_client, s, default_rules(), [receiver], store=store)
            body = proto_request(slow + whole).SerializeToString()
            reply = await http.post(f"{url}/v1/traces", content=body, headers=PB)
            assert reply.status_code == 200
            assert not ExportTraceServiceResponse.FromString(reply.content).HasField(
                "partial_success"
            )
            store.flush()
            metrics = (await http.get(f"{url}/metrics")).text
            for tick in (t0, t0 + 2, t0 + 4):  # pending, pending, firing (for: 4s)
                alerter.evaluate(tick)
            assert await alerter.deliver(t0 + 4) == 2
            states = StateStore(redis_client, key_prefix).load()

            clock[0] = t0 + 80  # the slow spans have left the 1 m window
            fast = _mixed(0.5, 0.020, [t0 + 30 + 3 * i for i in range(16)])
            reply = await http.post(f"{url}/v1/traces", content=json_body(proto_request(fast)),
                                    headers=JS)  # fmt: skip
            assert reply.status_code == 200
            assert reply.json() == {}
            store.flush()
            alerter.evaluate(t0 + 80)
            assert await alerter.deliver(t0 + 80) == 2

    assert _quantile(metrics, "podpulse_ttft_ms", "ep1") == pytest.approx(3000.0, rel=0.01)
    assert _quantile(metrics, "podpulse_tpot_ms", "ep1") == pytest.approx(80.0, rel=0.01)
    assert 'podpulse_window_samples{endpoint="ep1",metric="ttft_ms",model="qwen"} 16.0' in metrics
    assert 'podpulse_window_samples{endpoint="ep2",metric="tpot_ms",model="qwen"} 0.0' in metrics
    assert _quantile(metrics, "podpulse_ttft_ms", "ep2") is None
    assert "# TYPE podpulse_tpot_ms gauge" in metrics
    sent = [
        (body["status"], alert["labels"]["alertname"], alert["labels"]["severity"])
        for body in hook.bodies()
        for alert in body["alerts"]
    ]
    assert sorted(sent[:2]) == [
        ("firing", "TpotP95High", "warning"),
        ("firing", "TtftP95High", "warning"),
    ]
    assert sorted(sent[2:]) == [
        ("resolved", "TpotP95High", "warning"),
        ("resolved", "TtftP95High", "warning"),
    ]
    summaries = sorted(a["annotations"]["summary"] for b in hook.bodies()[:2] for a in b["alerts"])
    assert re.fullmatch(r"time per output token P95 [\d.]+ ms on ep1 \(limit 50 ms\)", summaries[0])
    assert re.fullmatch(r"time to first token P95 [\d.]+ ms on ep1 \(limit 2000 ms\)", summaries[1])
    ep2 = SeriesKey("ep2", "qwen")
    assert states[("TtftP95High", ep2)].phase == "no_data"
    assert states[("TpotP95High", ep2)].phase == "no_data"
    assert ("ExecP95High", ep2) not in states  # inactive: ep2's whole answers count there


_GENAI = {"name": "chat qwen", "resource": {"runpod.endpoint.id": "ep1"}}


@pytest.mark.parametrize(
    ("attrs", "kind", "reason"),
    [
        (_streamed("0.4", 0.02), {}, f"{TTFT} must be a number, got str"),
        (_streamed(float("nan"), 0.02), {}, f"{TTFT} must be a finite number of seconds"),
        (_streamed(0.4, float("inf")), {}, f"{TPOT} must be a finite number of seconds"),
        (
            _streamed(-0.1, 0.02),
            {},
            f"{TTFT} must be a finite number of seconds in [0, 1e6], got -0.1",
        ),
        (
            _streamed(0.4, 2e6),
            {},
            f"{TPOT} must be a finite number of seconds in [0, 1e6], got 2000000.0",
        ),
        # 700 "s" to first token in a job of 4 s in all: milliseconds sent as seconds.
        (
            _streamed(700.0, 0.02),
            {},
            f"{TTFT} is 700 s, longer than the job's podpulse.total_ms 4000 ms",
        ),
        ({**_generation(0.3, 0.01), TPOT: -1.0}, _GENAI, f"{TPOT} must be a finite number"),
        ({**_generation(0.3, 0.01), TTFT: True}, _GENAI, f"{TTFT} must be a number, got bool"),
    ],
)
async def test_a_bad_time_to_first_or_per_token_refuses_that_span_alone(
    attrs: dict[str, Any], kind: dict[str, Any], reason: str
) -> None:
    """A string, NaN, infinite, negative or past-1e6 s TTFT or TPOT, or a TTFT longer than the
    job's total, on a prober or a worker span, is rejected with its reason in partial_success,
    in protobuf and in OTLP JSON; the good spans around it count, once each."""
    specs = [
        SpanSpec(_streamed(0.4, 0.02)),
        SpanSpec(attrs, **kind),
        SpanSpec(_streamed(0.6, 0.03)),
    ]
    for headers, body in (
        (PB, proto_request(specs).SerializeToString()),
        (JS, json_body(proto_request(specs))),
    ):
        store = MemoryWindowStore(bucket_s=10, retention_s=3600, max_series=10, clock=lambda: NOW)
        app = create_ingest_app(settings(), store, clock=lambda: NOW,
                                token=Secret("ALERTER_TEST_TOKEN"))  # fmt: skip
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://r"
        ) as client:
            reply = await client.post("/v1/traces", content=body, headers=headers)
        assert reply.status_code == 200
        if headers is JS:
            partial = reply.json()["partialSuccess"]
            rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
        else:
            ps = ExportTraceServiceResponse.FromString(reply.content).partial_success
            rejected, message = ps.rejected_spans, ps.error_message
        assert rejected == 1
        assert reason in message
        ttft = store.stat(EP1, "ttft_ms", "max", 60, NOW)
        assert ttft.samples == 2
        assert ttft.value == pytest.approx(600.0, rel=0.01)
        assert store.stat(EP1, "tpot_ms", "min", 60, NOW).value == pytest.approx(20.0, rel=0.01)
        assert store.stat(EP1, "exec_ms", "p50", 60, NOW).samples == 2  # the bad one: not at all


async def test_a_first_token_past_the_span_duration_counts_without_a_measured_total() -> None:
    """Without podpulse.total_ms the span's duration is the total, but it starts at the real
    send and the prober's TTFT at the intended one (earlier under load): a TTFT longer than the
    duration is counted, not refused."""
    attrs = {**_streamed(2.0, 0.02), "runpod.execution_ms": 500.0}
    del attrs["podpulse.total_ms"]
    store = MemoryWindowStore(bucket_s=10, retention_s=3600, max_series=10, clock=lambda: NOW)
    app = create_ingest_app(settings(), store, clock=lambda: NOW,
                            token=Secret("ALERTER_TEST_TOKEN"))  # fmt: skip
    body = proto_request([SpanSpec(attrs, duration_s=1.5)]).SerializeToString()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://r"
    ) as client:
        reply = await client.post("/v1/traces", content=body, headers=PB)
    assert reply.status_code == 200
    assert not ExportTraceServiceResponse.FromString(reply.content).HasField("partial_success")
    assert store.stat(EP1, "ttft_ms", "max", 60, NOW).value == pytest.approx(2000.0, rel=0.01)
    assert store.stat(EP1, "total_ms", "max", 60, NOW).value == pytest.approx(1500.0, rel=0.01)


def test_the_shipped_rules_alert_on_ttft_and_tpot_p95_like_the_others() -> None:
    """TtftP95High (P95 > 2000 ms) and TpotP95High (P95 > 50 ms) are warnings in the same
    1 m window, for and min_samples as the other latency rules."""
    rules = {rule.name: rule for rule in default_rules().rules}
    exec_rule = rules["ExecP95High"]
    for name, metric, threshold in (
        ("TtftP95High", "ttft_ms", 2000),
        ("TpotP95High", "tpot_ms", 50),
    ):
        rule = rules[name]
        assert (rule.metric, rule.stat, rule.op, rule.threshold, rule.severity) == (
            metric, "p95", ">", threshold, "warning"
        )  # fmt: skip
        assert (rule.window, rule.for_, rule.min_samples) == (
            exec_rule.window, exec_rule.for_, exec_rule.min_samples
        )  # fmt: skip
