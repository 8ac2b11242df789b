"""`podpulse report` as people read it: numbers without exponents, and lines whole when the
output goes to a file or a pipe. In-process, no twin."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from typer.testing import CliRunner

from podpulse.common.cli import ENTRY_POINT_GROUP, build_app
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.summary import TargetInfo
from podpulse.prober import ProberSettings, RunStats, summarize
from podpulse.prober._results_dir import write_summary_file

_APP = build_app(entry_points(group=ENTRY_POINT_GROUP))
_TARGET = TargetInfo(kind="twin", endpoint_id="ep-twin", base_url="http://127.0.0.1:9/v2")
_START = 1_700_000_000.0
# Week-long windows: the fourth starts 1814400 s in, which ":g" showed as 1.8144e+06.
_WINDOW_S = 604_800.0
_ERROR = "the endpoint answered 500: " + ("worker out of memory while loading shard " * 4).strip()


def _records() -> list[RequestRecord]:
    """Five requests a window for four windows, the last of them failed with a long error."""
    records = []
    for seq in range(20):
        start = _START + (seq // 5) * _WINDOW_S + (seq % 5) * 60
        failed = seq == 19
        records.append(
            RequestRecord(
                run_id="r", seq=seq, concurrency=1, intended=start, sent=start,
                done=start + 0.4, outcome=Outcome.FAILED if failed else Outcome.OK,
                delay_ms=None if failed else 20.0, exec_ms=None if failed else 300.0,
                output_tokens=None if failed else 40, error=_ERROR if failed else None,
            )
        )  # fmt: skip
    return records


@pytest.fixture
def soak_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A month-long soak's summary.json in tmp_path, under a clean prober environment."""
    for name in list(os.environ):
        if name.startswith(("RUNPOD_", "PROBER_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("COLUMNS", raising=False)
    folder = tmp_path / "soak-long"
    folder.mkdir()
    spec = ProbeSpec(run_id=folder.name, kind="soak", runs=20, warmup=0, window_s=_WINDOW_S)
    stats = RunStats.from_records(_records(), window_s=_WINDOW_S, origin=_START)
    write_summary_file(folder, summarize(spec, {1: stats}, ProberSettings(), target=_TARGET))
    return folder


def test_report_to_a_pipe_keeps_lines_whole_and_numbers_plain(soak_folder: Path) -> None:
    """Written to a pipe, the failure's 190-character example is one line, and window starts
    read 1814400 s, never in scientific notation."""
    result = CliRunner().invoke(
        _APP, ["report", soak_folder.name, "--results-dir", str(soak_folder.parent)]
    )
    assert result.exit_code == 1, result.output  # the failure fails the soak
    lines = result.stdout.splitlines()
    assert f"  FAILED: {_ERROR}" in lines
    assert "e+" not in result.stdout
    assert any("1814400 s" in line for line in lines), result.stdout
