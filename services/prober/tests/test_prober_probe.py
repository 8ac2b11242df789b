"""run_probe end to end on a real twin: results folder, partial summaries, sweeps, soaks, shards."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import RequestRecord, read_records
from podpulse.common.summary import read_summary
from podpulse.prober import (
    Engine,
    Load,
    ProberSettings,
    RunStats,
    Target,
    merge_stats,
    run_probe,
    run_shard,
    write_summary,
)
from podpulse.prober._load import arrivals
from podpulse.prober._shards import shard_load
from podpulse.prober._soak import soak_verdict

_SETTINGS = ProberSettings()


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open(newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _spec(**changes) -> ProbeSpec:
    base = {"run_id": "r1", "runs": 4, "warmup": 0, "input_overrides": {"exec_ms": 30}}
    return ProbeSpec.model_validate(base | changes)


async def test_csv_rows_appear_while_the_run_is_going(twin_target: Target, tmp_path: Path):
    """requests.csv holds each finished request before the run ends."""
    spec = _spec(runs=12, input_overrides={"exec_ms": 120})
    task = asyncio.create_task(run_probe(spec, twin_target, tmp_path, settings=_SETTINGS))
    csv_path = tmp_path / "r1" / "requests.csv"
    while _rows(csv_path) < 2:
        assert not task.done()
        await asyncio.sleep(0.02)
    assert not task.done()
    summary = await task
    assert _rows(csv_path) == 12 == summary.level.requests


async def test_cancel_writes_a_partial_summary(twin_target: Target, tmp_path: Path):
    """A cancelled run still writes summary.json, marked interrupted, over what finished."""
    spec = _spec(runs=200, input_overrides={"exec_ms": 80})
    task = asyncio.create_task(run_probe(spec, twin_target, tmp_path, settings=_SETTINGS))
    csv_path = tmp_path / "r1" / "requests.csv"
    while _rows(csv_path) < 3:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    summary = read_summary(tmp_path / "r1" / "summary.json")
    assert summary.interrupted is True
    assert summary.passed is False
    assert summary.level.requests == _rows(csv_path) >= 3
    assert summary.level.requests < 200


async def test_one_client_span_per_request(twin_target: Target, tmp_path: Path):
    """Each measured request becomes one runpod.job span carrying its run and timings."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spec = _spec(runs=3, warmup=1)
    await run_probe(
        spec, twin_target, tmp_path, settings=_SETTINGS, tracer=provider.get_tracer("test")
    )
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["runpod.job"] * 3
    records = {r.job_id: r for r in read_records(tmp_path / "r1")}
    for span in spans:
        attrs = span.attributes or {}
        record = records[str(attrs["runpod.job.id"])]
        assert attrs["podpulse.probe.run_id"] == "r1"
        assert attrs["runpod.endpoint.id"] == twin_target.endpoint_id
        assert attrs["podpulse.total_ms"] == pytest.approx(record.total_ms, abs=0.01)
        assert span.start_time == round(record.intended * 1e9)


async def test_sweep_writes_one_row_per_level_and_recommends(twin_target: Target, tmp_path: Path):
    """A sweep summarises each level, tables them, and recommends the highest passing one."""
    spec = _spec(kind="sweep", concurrency=(1, 2), runs=4)
    returned = await run_probe(spec, twin_target, tmp_path, settings=_SETTINGS)
    summary = read_summary(tmp_path / "r1" / "summary.json")
    assert summary == returned
    assert summary.target == twin_target.info()
    assert summary.sweep is not None
    assert [row.concurrency for row in summary.sweep.table] == [1, 2]
    assert all(row.status == "PASS" for row in summary.sweep.table)
    assert summary.sweep.recommendation is not None
    assert summary.sweep.recommendation.concurrency == 2
    assert summary.passed is True
    assert {r.concurrency for r in read_records(tmp_path / "r1")} == {1, 2}


async def test_sweep_with_an_impossible_slo_recommends_nothing(twin_target: Target, tmp_path):
    """When no level meets the SLO the sweep fails and there is no recommendation."""
    settings = ProberSettings(slo_total_p50_ms=1)
    spec = _spec(kind="sweep", concurrency=(1, 2), runs=2)
    summary = await run_probe(spec, twin_target, tmp_path, settings=settings)
    assert summary.sweep is not None
    assert summary.sweep.recommendation is None
    assert summary.passed is False
    assert [row.status for row in summary.sweep.table] == ["FAIL", "FAIL"]


async def test_shards_merge_into_the_whole_run(twin_target: Target, tmp_path: Path):
    """Two shards of one run send their shares; merged stats summarise all requests."""
    spec = _spec(concurrency=(2,), runs=7)
    parts = await asyncio.gather(
        *(
            run_shard(spec, twin_target, tmp_path, settings=_SETTINGS, shard=i, shards=2)
            for i in range(2)
        )
    )
    assert sorted(p[2].requests for p in parts) == [3, 4]
    assert not (tmp_path / "r1" / "summary.json").exists()
    from_files = [
        {int(k): RunStats.from_json(v) for k, v in json.loads(path.read_text()).items()}
        for path in sorted((tmp_path / "r1").glob("stats-shard*.json"))
    ]
    merged = merge_stats(from_files)
    summary = write_summary(tmp_path, spec, merged, _SETTINGS, target=twin_target.info())
    records = read_records(tmp_path / "r1")
    assert summary.level.requests == 7 == len(records)
    assert len({r.seq for r in records}) == 7
    assert merged[2] == RunStats.from_records(records)


async def test_stable_soak_passes_with_plot_and_report(twin_target: Target, tmp_path: Path):
    """A steady soak: no failures, P95 under the limit, no trend; PNG and report written."""
    spec = _spec(
        kind="soak",
        concurrency=(2,),
        runs=None,
        duration_s=4.0,
        window_s=1.0,
        input_overrides={"exec_ms": 40},
    )
    # Steady here means the handler's 40 ms never changes; the box under the test suite does:
    # on two loaded cores a 4 s run's window P95 can climb tens of percent from one second to
    # the next (CI saw the default 10 % rule fail this run). The rule's power is tested below,
    # on a handler that really slows down.
    settings = _SETTINGS.model_copy(update={"soak_min_change_pct": 100.0})
    await run_probe(spec, twin_target, tmp_path, settings=settings)
    folder = tmp_path / "r1"
    soak = read_summary(folder / "summary.json").soak
    assert soak is not None
    assert soak.passed is True, [c for c in soak.checks if not c.passed]
    assert len(soak.windows) >= 4
    assert soak.plot == "latency.png"
    assert (folder / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PASS" in (folder / "report.md").read_text().splitlines()[0]


async def test_growing_execution_time_fails_the_soak_trend_test(twin_target: Target):
    """Execution time growing over the run fails the P95 and throughput trend tests."""
    records: list[RequestRecord] = []
    async with twin_target.client(timeout_s=10) as client:
        engine = Engine(
            client,
            run_id="degrade",
            # Steep (15 ms more per request), so the trend stands far above the tens of ms a
            # loaded machine adds to every request: a 6 ms slope failed to show on a busy box.
            make_input=lambda seq: {"exec_ms": 20 + 15 * seq},
            on_record=records.append,
        )
        await engine.run(Load(concurrency=2, duration_s=4.0))
    assert engine.started_at is not None
    stats = RunStats.from_records(records, window_s=0.5, origin=engine.started_at)
    verdict = soak_verdict(stats, p95_threshold_ms=4000, min_change_pct=10)
    checks = {c.check: c.passed for c in verdict.checks}
    assert checks["no P95 degradation"] is False
    assert checks["no throughput degradation"] is False
    assert checks["zero failures"] is True
    assert verdict.passed is False


def test_an_open_loop_cap_below_the_shard_count_is_refused():
    """A cap of 1 over 3 shards would leave two shards uncapped (0): refused, not run."""
    spec = _spec(arrival="poisson", rate=10, concurrency=(1,), runs=6)
    with pytest.raises(ValueError, match="cap of 1 cannot be split over 3 shards"):
        shard_load(spec, 1, 0, 3)
    caps = [shard_load(spec, 4, i, 3) for i in range(3)]
    assert [load.concurrency for load in caps if load] == [2, 1, 1]
    assert [shard_load(spec, 0, i, 3).concurrency for i in range(3)] == [0, 0, 0]  # type: ignore[union-attr]  # a shard with a share is a Load


def test_unseeded_sharded_poisson_shards_partition_one_schedule():
    """Without a seed every shard derives the same one from the run id, so together the shards
    send exactly one Poisson schedule."""
    spec = _spec(arrival="poisson", rate=10, concurrency=(0,), runs=9)
    loads = [shard_load(spec, 0, i, 3) for i in range(3)]
    (seed,) = {load.seed for load in loads if load}
    assert seed is not None
    assert shard_load(spec, 0, 1, 3) == loads[1]  # deterministic: every delivery agrees
    whole = Load(arrival="poisson", rate=10, runs=9, seed=seed)
    union = sorted(a for load in loads if load for a in itertools.islice(arrivals(load), 3))
    assert union == list(itertools.islice(arrivals(whole), 9))
