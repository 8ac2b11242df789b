"""Prompt sets, settings, specs and spans: the prober's inputs and outputs without a twin."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import Outcome, RequestRecord, read_records
from podpulse.prober import (
    ProberSettings,
    PromptSetError,
    load_prompts,
)
from podpulse.prober._results_dir import ResultsWriter
from podpulse.prober._shards import shard_load
from podpulse.prober._spans import emit_span


def test_shipped_prompt_set_loads_career_questions():
    """The default prompt set ships with the package: ~20 questions, some with profiles."""
    prompts = load_prompts()
    assert len(prompts) >= 20
    assert any(p.profile for p in prompts)
    assert all(p.to_input()["question"].strip() for p in prompts)


def test_missing_prompt_set_is_a_clear_error(tmp_path: Path):
    """A missing file names itself."""
    with pytest.raises(PromptSetError, match="does not exist"):
        load_prompts(tmp_path / "nope.jsonl")


def test_bad_prompt_line_names_its_line_number(tmp_path: Path):
    """A malformed line is reported with its number and what is wrong."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "ok?"}\n\n{"question": ""}\n')
    with pytest.raises(PromptSetError, match=r"line 3: 'question' must be a non-empty"):
        load_prompts(path)
    path.write_text('{"question": "ok?"}\nnot json\n')
    with pytest.raises(PromptSetError, match="line 2: not JSON"):
        load_prompts(path)


def test_settings_read_slo_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    """PROBER_* variables override the SLO and sweep defaults."""
    monkeypatch.setenv("PROBER_SLO_TOTAL_P95_MS", "6000")
    monkeypatch.setenv("PROBER_SWEEP_LEVELS", "1,2,8")
    settings = ProberSettings()
    assert settings.slo_total_p95_ms == 6000
    assert settings.sweep_levels == (1, 2, 8)
    assert settings.smoke_every_s == 900
    assert settings.sweep_cron == "0 3 * * *"


def test_spec_refuses_inconsistent_flags():
    """A spec without runs or duration, or an open loop without a rate, does not construct."""
    with pytest.raises(ValidationError, match="runs, duration_s"):
        ProbeSpec(run_id="x")
    with pytest.raises(ValidationError, match="need a rate"):
        ProbeSpec(run_id="x", runs=3, arrival="poisson")
    with pytest.raises(ValidationError, match="make a sweep"):
        ProbeSpec(run_id="x", runs=3, concurrency=(1, 2))
    with pytest.raises(ValidationError, match="run id"):
        ProbeSpec(run_id="../etc", runs=3)


def test_shards_split_slots_and_runs_exactly():
    """Closed-loop shards share out slots and runs with nothing lost or doubled."""
    spec = ProbeSpec(run_id="x", kind="sweep", concurrency=(3, 1), runs=31, warmup=0)
    loads = [shard_load(spec, 3, i, 2) for i in range(2)]
    assert [(ld.concurrency, ld.runs) for ld in loads if ld] == [(2, 20), (1, 11)]
    assert shard_load(spec, 1, 1, 2) is None


def _record(outcome: Outcome) -> RequestRecord:
    return RequestRecord(
        run_id="run-1",
        seq=0,
        concurrency=2,
        intended=1000.0,
        sent=1000.001,
        done=1001.5,
        outcome=outcome,
        job_id="job-1",
        status="COMPLETED" if outcome is Outcome.OK else "FAILED",
        worker_id="w-1",
        delay_ms=100,
        exec_ms=1000,
        input_tokens=30,
        output_tokens=40,
        error=None if outcome is Outcome.OK else "worker exited with code 17",
        model="calibrated",
    )


def test_span_has_the_documented_attributes_and_request_times():
    """runpod.job is a CLIENT span from intended start to done with the documented attributes."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emit_span(
        _record(Outcome.OK),
        endpoint_id="ep",
        kind="load",
        target_kind="hosted",
        tracer=provider.get_tracer("t"),
    )
    [span] = exporter.get_finished_spans()
    assert span.name == "runpod.job"
    assert span.kind is SpanKind.CLIENT
    assert (span.start_time, span.end_time) == (1000 * 10**9, 1001_500_000_000)
    assert dict(span.attributes or {}) == {
        "runpod.endpoint.id": "ep",
        "podpulse.target.kind": "hosted",
        "runpod.job.id": "job-1",
        "runpod.job.status": "COMPLETED",
        "runpod.worker.id": "w-1",
        "runpod.delay_ms": 100,
        "runpod.execution_ms": 1000,
        "podpulse.total_ms": 1500.0,
        "podpulse.probe.run_id": "run-1",
        "podpulse.probe.kind": "load",
        "podpulse.probe.concurrency": 2,
        "podpulse.probe.outcome": "OK",
        "gen_ai.request.model": "calibrated",
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 40,
        "podpulse.tokens_per_second": 40.0,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_failed_request_span_has_error_status():
    """A failed request's span has status ERROR with the failure kind and reason."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emit_span(
        _record(Outcome.FAILED),
        endpoint_id="ep",
        kind="soak",
        target_kind="twin",
        tracer=provider.get_tracer("t"),
    )
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "FAILED: worker exited with code 17"


def test_csv_round_trips_and_skips_a_row_cut_short(tmp_path: Path):
    """Rows read back equal what was written; a half-written last row is skipped."""
    with ResultsWriter(tmp_path) as writer:
        writer.write(_record(Outcome.OK))
        writer.write(_record(Outcome.FAILED))
    with (tmp_path / "requests.csv").open("a") as handle:
        handle.write("run-1,5,2,1000.0")  # a crash mid-row
    assert read_records(tmp_path) == [_record(Outcome.OK), _record(Outcome.FAILED)]
