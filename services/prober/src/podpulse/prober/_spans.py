"""One OpenTelemetry CLIENT span ``runpod.job`` per request, with RunPod's ids and timings.

The span starts at the request's intended start and ends when its result arrived, so its
duration is the request's total as the prober reports it (client-side queueing included).
It is emitted after the fact, with explicit times, once the record is complete. A streamed
request's span also carries its time to first token and time per output token under the
OpenTelemetry GenAI names, in seconds as those metrics are.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from podpulse.common.request_records import RequestRecord
from podpulse.common.summary import TargetKind

__all__ = ["SPAN_NAME", "emit_span", "span_attributes"]

SPAN_NAME = "runpod.job"


def span_attributes(
    record: RequestRecord,
    *,
    endpoint_id: str,
    kind: str,
    target_kind: TargetKind,
    model: str | None = None,
) -> dict[str, AttributeValue]:
    """The span's attributes; ones the request did not produce are left out, not faked.

    ``podpulse.target.kind`` (hosted or twin) lets a receiver tell a twin's spans from the
    endpoint's, so a local run never moves a production alert.
    """
    values: dict[str, AttributeValue | None] = {
        "runpod.endpoint.id": endpoint_id,
        "podpulse.target.kind": target_kind,
        "runpod.job.id": record.job_id,
        "runpod.job.status": record.status or record.outcome.value,
        "runpod.worker.id": record.worker_id,
        "runpod.delay_ms": record.delay_ms,
        "runpod.execution_ms": record.exec_ms,
        "podpulse.total_ms": round(record.total_ms, 3),
        "podpulse.probe.run_id": record.run_id,
        "podpulse.probe.kind": kind,
        "podpulse.probe.concurrency": record.concurrency,
        "podpulse.probe.outcome": record.outcome.value,
        "gen_ai.request.model": record.model or model,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "podpulse.tokens_per_second": record.tokens_per_second,
        "gen_ai.server.time_to_first_token": _seconds(record.ttft_ms),
        "gen_ai.server.time_per_output_token": _seconds(record.tpot_ms),
    }
    return {key: value for key, value in values.items() if value is not None}


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def emit_span(
    record: RequestRecord,
    *,
    endpoint_id: str,
    kind: str,
    target_kind: TargetKind,
    model: str | None = None,
    tracer: Tracer | None = None,
) -> None:
    """Record one finished request as a ``runpod.job`` span (status ERROR on failure)."""
    tracer = tracer or trace.get_tracer("podpulse.prober")
    span = tracer.start_span(
        SPAN_NAME,
        kind=SpanKind.CLIENT,
        start_time=round(record.intended * 1e9),
        attributes=span_attributes(
            record, endpoint_id=endpoint_id, kind=kind, target_kind=target_kind, model=model
        ),
    )
    if not record.ok:
        span.set_status(Status(StatusCode.ERROR, f"{record.outcome.value}: {record.error or ''}"))
    span.end(end_time=round(record.done * 1e9))
