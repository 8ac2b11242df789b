"""The podpulse loadtest / soak / report commands: flags and exit codes in-process (typer's
runner) against the session's twin as a hosted endpoint, and one real process on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import hosted_env

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.summary import TargetInfo, parse_summary
from podpulse.common.testing import sigint_as
from podpulse.prober import Target
from podpulse.prober._results_dir import ResultsWriter, write_json, write_target

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
# A small, quick embedded twin for the real-process test: one warm worker, 30 ms jobs.
_FAST_TWIN = {
    "TWIN_WORKERS_MIN": "1",
    "TWIN_WORKERS_MAX": "1",
    "TWIN_WORKER_CONCURRENCY": "4",
    "TWIN_STOP_GRACE_S": "0.3",
    "TWIN_CALIBRATED_EXEC_MS": "30",
    "TWIN_CALIBRATED_DISTRIBUTION": "fixed",
    "PROBER_WARMUP": "0",
    "PODPULSE_LOG_LEVEL": "WARNING",
}
_TWIN_INFO = TargetInfo(kind="twin", endpoint_id="ep-twin", base_url="http://127.0.0.1:1/v2")


def test_sweep_passes_names_its_target_and_report_reads_it(cli, twin_target: Target):
    """loadtest --concurrency 1,2 exits 0, says which target it uses, prints the table and
    recommendation; report reads the same summary back."""
    done = cli("loadtest", "--concurrency", "1,2", "--runs", "5", "--run-id", "s1",
               **hosted_env(twin_target))  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"on target hosted: endpoint {twin_target.endpoint_id} at {twin_target.base_url}" in (
        done.stderr
    )
    assert "Concurrency" in done.stdout
    assert "recommendation: concurrency 2" in done.stdout
    assert "Total P95" in done.stdout
    again = cli("report", "s1", "--json")
    assert again.exit_code == 0, again.output
    summary = parse_summary(again.stdout)
    assert summary.kind == "sweep"
    assert summary.target == twin_target.info().model_copy(update={"kind": "hosted"})
    assert summary.sweep is not None
    assert [row.concurrency for row in summary.sweep.table] == [1, 2]


def test_impossible_slo_from_the_environment_exits_1(cli, twin_target: Target):
    """An SLO no run can meet (PROBER_SLO_TOTAL_P50_MS=1) makes loadtest exit 1."""
    done = cli("loadtest", "--runs", "5", "--json", "--target", "hosted",
               PROBER_SLO_TOTAL_P50_MS="1", **hosted_env(twin_target))  # fmt: skip
    assert done.exit_code == 1, done.output
    summary = parse_summary(done.stdout)
    rows = {row.metric: row.status for row in summary.level.slo.rows}
    assert rows["Total P50"] == "FAIL"
    assert summary.level.requests == 5
    assert summary.passed is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "1,x"], "--concurrency takes numbers"),
        (["--arrival", "poisson", "--runs", "3"], "need a rate"),
        (["--duration", "soon"], "--duration takes a positive duration"),
        (["--target", "staging"], "--target must be hosted or twin"),
        (["--concurrency", ""], "--concurrency levels must be >= 1"),
        (["--run-id", ""], "run_id"),
        (["--arrival", "constant", "--rate", "inf", "--runs", "3"], "--rate takes a finite"),
        (["--timeout", "inf", "--runs", "3"], "--timeout takes a finite"),
        (["--duration", "inf"], "--duration takes a positive duration"),
    ],
)
def test_bad_flags_exit_2_with_a_message(cli, args: list[str], message: str):
    """Malformed or inconsistent flags exit 2 and say what is wrong."""
    done = cli("loadtest", *args)
    assert done.exit_code == 2
    assert message in done.stderr


def test_soak_flags_are_checked_before_anything_starts(cli):
    """soak --window with a bad duration exits 2 naming the flag."""
    done = cli("soak", "--runs", "3", "--window", "later")
    assert done.exit_code == 2
    assert "--window takes a positive duration" in done.stderr


def test_endpoint_without_a_key_exits_2(cli):
    """RUNPOD_ENDPOINT_ID without RUNPOD_API_KEY is refused, not silently run on the twin."""
    done = cli("loadtest", "--runs", "1", RUNPOD_ENDPOINT_ID="abc123")
    assert done.exit_code == 2
    assert "RUNPOD_API_KEY" in done.stderr


def test_hosted_target_without_an_endpoint_exits_2(cli):
    """--target hosted with no RUNPOD_ENDPOINT_ID is refused, never run on a twin."""
    done = cli("loadtest", "--runs", "1", "--target", "hosted", RUNPOD_API_KEY="k")
    assert done.exit_code == 2
    assert "RUNPOD_ENDPOINT_ID" in done.stderr


def _record(run_id: str, seq: int, *, done: float = 0.5) -> RequestRecord:
    return RequestRecord(
        run_id=run_id, seq=seq, concurrency=1, intended=100.0 + seq, sent=100.0 + seq,
        done=100.0 + seq + done, outcome=Outcome.OK, delay_ms=100, exec_ms=300,
    )  # fmt: skip


def test_report_rebuilds_a_summary_from_the_csv_of_a_dead_run(cli, tmp_path: Path):
    """A run that died before its summary is reported from requests.csv, spec.json and
    target.json; an interrupted run never passes, however good its few requests looked."""
    folder = tmp_path / "dead"
    write_json(folder / "spec.json", ProbeSpec(run_id="dead", runs=10).model_dump(mode="json"))
    write_target(folder, _TWIN_INFO)
    with ResultsWriter(folder) as writer:
        for seq in range(3):
            writer.write(_record("dead", seq))
    done = cli("report", "dead", "--json")
    assert done.exit_code == 1, done.output
    summary = parse_summary(done.stdout)
    assert (summary.level.requests, summary.interrupted, summary.passed) == (3, True, False)
    assert summary.target == _TWIN_INFO
    assert summary.level.latency_ms.total.p50 == 500.0


def test_report_of_a_damaged_run_folder_exits_2_naming_the_problem(cli, tmp_path: Path):
    """A corrupt summary.json or a CSV without spec.json is a clear error, not a traceback."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "summary.json").write_text("{not json", encoding="utf-8")
    done = cli("report", "corrupt")
    assert done.exit_code == 2
    assert "not a valid RunSummary" in done.stderr
    assert "Invalid JSON" in done.stderr
    orphan = tmp_path / "orphan"
    with ResultsWriter(orphan) as writer:
        writer.write(_record("orphan", 0))
    done = cli("report", "orphan")
    assert done.exit_code == 2
    assert "spec.json" in done.stderr


def test_report_of_an_old_summary_exits_2_naming_the_field(cli, tmp_path: Path):
    """A summary.json from before the schema (no schema_version, no target) exits 2 naming
    the missing fields, and shows no verdict."""
    old = tmp_path / "old"
    write_json(old / "summary.json", {"run_id": "old", "kind": "load", "passed": True,
                                      "requests": 5, "latency_ms": {}})  # fmt: skip
    done = cli("report", "old")
    assert done.exit_code == 2
    assert "schema_version: Field required" in done.stderr
    assert "target: Field required" in done.stderr
    assert "verdict" not in done.stdout


def test_report_refuses_a_verdict_its_evidence_contradicts(cli, tmp_path: Path, twin_target):
    """A summary.json edited to pass while its SLO rows fail exits 2 naming `passed`."""
    cli("loadtest", "--runs", "3", "--run-id", "edited", "--json", PROBER_SLO_TOTAL_P50_MS="1",
        **hosted_env(twin_target))  # fmt: skip
    path = tmp_path / "edited" / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["passed"] is False
    path.write_text(json.dumps(data | {"passed": True}), encoding="utf-8")
    done = cli("report", "edited")
    assert done.exit_code == 2
    assert "passed=True contradicts the run's own evidence" in done.stderr
    assert "PASS" not in done.stdout


def test_ctrl_c_writes_the_partial_summary_and_exits_130(tmp_path: Path):
    """A real `podpulse loadtest` process on the default target (the embedded twin, as no
    endpoint is set) gets SIGINT mid-run: the summary of what finished is written, exit 130."""
    env = _clean_env()
    proc = subprocess.Popen(
        # Ctrl-C as at a terminal, whatever the suite was started with.
        sigint_as(signal.SIG_DFL, [PODPULSE, "loadtest", "--runs", "2000", "--run-id", "cut"]),
        env=env | _FAST_TWIN | {"PROBER_RESULTS_DIR": str(tmp_path)},
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
    assert "on target twin: endpoint" in stderr
    summary = parse_summary((tmp_path / "cut" / "summary.json").read_text())
    assert summary.interrupted is True
    assert summary.target.kind == "twin"
    assert 3 <= summary.level.requests < 2000


def test_a_twin_load_test_runs_with_torch_unimportable(tmp_path: Path):
    """`podpulse loadtest --target twin` passes with torch unimportable in every process (the
    CLI, the twin and its workers): probing needs no model stack."""
    shim = tmp_path / "no-torch" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("torch is unimportable here")\n')
    env = (
        _clean_env()
        | _FAST_TWIN
        | {
            "PYTHONPATH": str(shim.parent),
            "PROBER_RESULTS_DIR": str(tmp_path / "results"),
        }
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert "torch is unimportable here" in probe.stderr  # the shim really hides torch
    done = subprocess.run(
        [PODPULSE, "loadtest", "--target", "twin", "--runs", "4", "--run-id", "no-torch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = parse_summary((tmp_path / "results" / "no-torch" / "summary.json").read_text())
    assert (summary.target.kind, summary.level.ok, summary.passed) == ("twin", 4, True)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_an_embedded_twin_says_nothing_below_debug(tmp_path: Path, level: str):
    """The embedded twin's worker lines stay out of a loadtest's output unless at debug."""
    env = _clean_env() | _FAST_TWIN | {
        "PROBER_RESULTS_DIR": str(tmp_path), "PODPULSE_LOG_LEVEL": level,
        "PODPULSE_LOG_FORMAT": "json",
    }  # fmt: skip
    done = subprocess.run(
        [PODPULSE, "loadtest", "--target", "twin", "--runs", "2", "--run-id", "quiet"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout
    assert ("worker starting" in done.stderr) is (level == "DEBUG"), done.stderr


def _clean_env() -> dict[str, str]:
    # The caller's endpoint, prober, twin and telemetry variables must not steer these runs.
    prefixes = ("RUNPOD_", "PROBER_", "TWIN_", "OTEL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def test_a_run_id_is_never_reused(tmp_path: Path):
    """Writing into a run folder that already has requests.csv is refused, not appended."""
    folder = tmp_path / "once"
    ResultsWriter(folder).close()
    with pytest.raises(FileExistsError, match="run ids name one run"):
        ResultsWriter(folder)


def test_an_embedded_twin_whose_workers_cannot_start_is_one_line_and_exit_2(cli) -> None:
    """The twin target with a handler that cannot load: exit 2 with one line saying why (the
    worker's own last lines), not a traceback after a minute's wait."""
    done = cli("loadtest", "--target", "twin", "--runs", "1",
               TWIN_HANDLER="no_such_module:handler", TWIN_WORKERS_MIN="1")  # fmt: skip
    assert done.exit_code == 2, done.output
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: the embedded twin did not start: twin workers fail to start")
    assert "no_such_module" in line
    assert "Traceback" not in done.output
