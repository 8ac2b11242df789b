"""The podpulse loadtest / soak / report commands, as a user runs them (real embedded twin)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podpulse.prober import Outcome, ProbeSpec, RequestRecord
from podpulse.prober._results_dir import ResultsWriter, write_json

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
# A small, quick embedded twin: one warm worker, 30 ms jobs, no warm-up.
_FAST_TWIN = {
    "PROBER_TWIN_WORKERS_MIN": "1",
    "PROBER_TWIN_WORKERS_MAX": "1",
    "PROBER_TWIN_EXEC_MS": "30",
    "PROBER_TWIN_EXEC_DISTRIBUTION": "fixed",
    "PROBER_TWIN_WORKER_CONCURRENCY": "4",
    "PROBER_WARMUP": "0",
    "LOG_LEVEL": "WARNING",
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "PROBER_", "OTEL_"))}
    return env | _FAST_TWIN | {"PROBER_RESULTS_DIR": str(tmp_path)} | extra


def _podpulse(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PODPULSE, *args],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sweep_on_the_embedded_twin_passes_and_report_reads_it(tmp_path: Path):
    """loadtest --concurrency 1,2 exits 0, prints the table and recommendation; report reads it."""
    done = _podpulse(tmp_path, "loadtest", "--concurrency", "1,2", "--runs", "5", "--run-id", "s1")
    assert done.returncode == 0, done.stderr
    assert "Concurrency" in done.stdout
    assert "recommendation: concurrency 2" in done.stdout
    assert "Total P95" in done.stdout
    again = _podpulse(tmp_path, "report", "s1", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["kind"] == "sweep"
    assert [row["concurrency"] for row in summary["table"]] == [1, 2]


def test_impossible_slo_from_the_environment_exits_1(tmp_path: Path):
    """An SLO no run can meet (PROBER_SLO_TOTAL_P50_MS=1) makes loadtest exit 1."""
    done = _podpulse(tmp_path, "loadtest", "--runs", "5", "--json", PROBER_SLO_TOTAL_P50_MS="1")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    rows = {row["metric"]: row["status"] for row in summary["slo"]["rows"]}
    assert rows["Total P50"] == "FAIL"
    assert summary["requests"] == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "1,x"], "--concurrency takes numbers"),
        (["--arrival", "poisson", "--runs", "3"], "need a rate"),
        (["--duration", "soon"], "--duration takes a positive duration"),
    ],
)
def test_bad_flags_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str):
    """Malformed or inconsistent flags exit 2 and say what is wrong."""
    done = _podpulse(tmp_path, "loadtest", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_endpoint_without_a_key_exits_2(tmp_path: Path):
    """RUNPOD_ENDPOINT_ID without RUNPOD_API_KEY is refused, not silently run on the twin."""
    done = _podpulse(tmp_path, "loadtest", "--runs", "1", RUNPOD_ENDPOINT_ID="abc123")
    assert done.returncode == 2
    assert "RUNPOD_API_KEY" in done.stderr


def test_report_rebuilds_a_summary_from_the_csv_of_a_dead_run(tmp_path: Path):
    """A run that died before its summary is reported from requests.csv alone."""
    folder = tmp_path / "dead"
    write_json(folder / "spec.json", ProbeSpec(run_id="dead", runs=10).model_dump(mode="json"))
    with ResultsWriter(folder) as writer:
        for seq in range(3):
            writer.write(
                RequestRecord(
                    run_id="dead",
                    seq=seq,
                    concurrency=1,
                    intended=100.0 + seq,
                    sent=100.0 + seq,
                    done=100.5 + seq,
                    outcome=Outcome.OK,
                    delay_ms=100,
                    exec_ms=300,
                )
            )
    done = _podpulse(tmp_path, "report", "dead", "--json")
    # An interrupted run never passes, however good its few requests looked.
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["requests"] == 3
    assert summary["interrupted"] is True
    assert summary["passed"] is False
    assert summary["latency_ms"]["total"]["p50"] == 500.0


def test_report_of_a_damaged_run_folder_exits_2_naming_the_problem(tmp_path: Path):
    """A corrupt summary.json or a CSV without spec.json is a clear error, not a traceback."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "summary.json").write_text("{not json", encoding="utf-8")
    done = _podpulse(tmp_path, "report", "corrupt")
    assert done.returncode == 2
    assert "cannot be read" in done.stderr
    assert "Traceback" not in done.stderr
    orphan = tmp_path / "orphan"
    with ResultsWriter(orphan) as writer:
        writer.write(
            RequestRecord(
                run_id="orphan",
                seq=0,
                concurrency=1,
                intended=1.0,
                sent=1.0,
                done=2.0,
                outcome=Outcome.OK,
            )
        )
    done = _podpulse(tmp_path, "report", "orphan")
    assert done.returncode == 2
    assert "spec.json" in done.stderr


def test_a_run_id_is_never_reused(tmp_path: Path):
    """Writing into a run folder that already has requests.csv is refused, not appended."""
    folder = tmp_path / "once"
    ResultsWriter(folder).close()
    with pytest.raises(FileExistsError, match="run ids name one run"):
        ResultsWriter(folder)


def test_ctrl_c_writes_the_partial_summary_and_exits_130(tmp_path: Path):
    """SIGINT mid-run: the summary of what finished is written, exit code 130."""
    proc = subprocess.Popen(
        [PODPULSE, "loadtest", "--runs", "2000", "--run-id", "cut"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    csv_path = tmp_path / "cut" / "requests.csv"
    deadline = time.monotonic() + 60
    while not (csv_path.exists() and len(csv_path.read_text().splitlines()) > 3):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 3 <= summary["requests"] < 2000
