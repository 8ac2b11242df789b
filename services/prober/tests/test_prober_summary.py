"""Summaries built from real statistics round-trip through summary.json as RunSummary, for
every kind of run, and the event carries the same summary."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from podpulse.common.events import ProbeRunCompleted, parse_event
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.summary import FailureName, ShardInfo, TargetInfo, parse_summary, read_summary
from podpulse.prober import (
    ProberSettings,
    RunStats,
    summarize,
    write_summary,
)

_SETTINGS = ProberSettings(soak_window_s=10)
_TARGET = TargetInfo(kind="twin", endpoint_id="ep-twin", base_url="http://127.0.0.1:9/v2")


def _record(seq: int, total_ms: float, outcome: Outcome = Outcome.OK, level: int = 1):
    start = 1_700_000_000.0 + seq
    ok = outcome is Outcome.OK
    return RequestRecord(
        run_id="r", seq=seq, concurrency=level, intended=start, sent=start,
        done=start + total_ms / 1000, outcome=outcome, delay_ms=5.0 if ok else None,
        exec_ms=total_ms / 2 if ok else None, output_tokens=20 if ok else None,
        error=None if ok else f"{outcome.value} #{seq % 4}",
    )  # fmt: skip


_latencies = st.lists(
    st.tuples(st.floats(1, 20_000, allow_nan=False), st.sampled_from(list(Outcome))),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(requests=_latencies)
def test_any_load_summary_round_trips(requests: list[tuple[float, Outcome]]) -> None:
    """Whatever the requests measured, summary -> JSON -> RunSummary is equal, and the
    event built from it parses back equal too."""
    spec = ProbeSpec(run_id="r", runs=max(1, len(requests)), warmup=0)
    stats = RunStats.from_records(_record(i, t, o) for i, (t, o) in enumerate(requests))
    summary = summarize(spec, {1: stats}, _SETTINGS, target=_TARGET)
    assert parse_summary(summary.model_dump_json()) == summary
    event = ProbeRunCompleted.of(summary, results_path="results/r")
    assert parse_event(event.model_dump_json()) == event
    assert event.slo_passed is summary.passed


def test_a_sweep_summary_round_trips(tmp_path: Path) -> None:
    """A sweep (table, recommendation, every level) written and read back is equal."""
    spec = ProbeSpec(kind="sweep", run_id="sw", concurrency=(1, 2, 3), runs=10, warmup=0)
    results = {
        level: RunStats.from_records(_record(i, 100.0 * level * level, level=level)
                                     for i in range(10))
        for level in (1, 2, 3)
    }  # fmt: skip
    written = write_summary(tmp_path, spec, results, _SETTINGS, target=_TARGET)
    assert read_summary(tmp_path / "sw" / "summary.json") == written
    assert written.sweep is not None
    assert [level.concurrency for level in written.levels] == [1, 2, 3]
    assert written.level.concurrency == 3  # all pass: the recommendation is the highest


def test_a_soak_summary_with_its_plot_round_trips(tmp_path: Path) -> None:
    """A soak's windows, trends, checks and plot name survive the round trip."""
    from podpulse.prober._results_dir import ResultsWriter

    spec = ProbeSpec(kind="soak", run_id="sk", concurrency=(1,), duration_s=50, warmup=0)
    records = [_record(i, 200.0) for i in range(50)]
    with ResultsWriter(tmp_path / "sk") as writer:
        for record in records:
            writer.write(record)
    stats = RunStats.from_records(records, window_s=10, origin=records[0].intended)
    written = write_summary(tmp_path, spec, {1: stats}, _SETTINGS, target=_TARGET)
    again = read_summary(tmp_path / "sk" / "summary.json")
    assert again == written
    assert again.soak is not None
    assert again.soak.plot == "latency.png"
    assert len(again.soak.windows) == 5
    assert (tmp_path / "sk" / "report.md").read_text().startswith("# Soak sk:")


def test_an_interrupted_sharded_summary_round_trips_and_never_passes() -> None:
    """Failed shards make the run interrupted; it does not pass, and round-trips."""
    spec = ProbeSpec(run_id="sh", runs=4, warmup=0)
    stats = RunStats.from_records(_record(i, 100.0) for i in range(2))
    shards = ShardInfo(count=2, failed={1: "PromptSetError: gone"}, missing=(1,))
    summary = summarize(spec, {1: stats}, _SETTINGS, target=_TARGET, shards=shards)
    assert (summary.interrupted, summary.passed) == (True, False)
    assert summary.level.slo.passed is True  # what was measured looked fine
    assert parse_summary(summary.model_dump_json()) == summary


def test_every_failure_outcome_has_a_name_in_the_schema() -> None:
    """The schema's failure kinds are exactly the prober's outcomes other than OK."""
    assert set(get_args(FailureName)) == {o.value for o in Outcome} - {Outcome.OK.value}
