"""How a real `podpulse loadtest` process ends when told to: SIGTERM as Ctrl-C, Ctrl-C with
the embedded twin quiet and prompt, and --json stdout that stays JSON with console spans on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from podpulse.common.request_records import read_records
from podpulse.common.summary import parse_summary
from podpulse.common.testing import sigint_as
from podpulse.prober import Target

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
# A small embedded twin: one warm worker, 30 ms jobs. A stop grace of 5 s makes the twin's
# graceful shutdown wait 5 s for any request still open, so a prompt exit shows it has none.
_TWIN = {
    "TWIN_WORKERS_MIN": "1",
    "TWIN_WORKERS_MAX": "1",
    "TWIN_WORKER_CONCURRENCY": "4",
    "TWIN_STOP_GRACE_S": "5",
    "TWIN_CALIBRATED_EXEC_MS": "30",
    "TWIN_CALIBRATED_DISTRIBUTION": "fixed",
    "PROBER_WARMUP": "0",
    "PODPULSE_LOG_LEVEL": "WARNING",
}


def _clean_env() -> dict[str, str]:
    # The caller's endpoint, prober, twin and telemetry variables must not steer these runs.
    prefixes = ("RUNPOD_", "PROBER_", "TWIN_", "OTEL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _interrupt_mid_run(
    tmp_path: Path,
    run_id: str,
    signum: int,
    *,
    sigint: signal.Handlers = signal.SIG_DFL,
    **twin_env: str,
) -> tuple[int, str]:
    """Start a twin load test (*twin_env* over its TWIN_ settings) with SIGINT set to *sigint*
    (whatever the suite itself was started with), send *signum* once rows are written;
    (rc, stderr), the process given a minute to exit after the signal."""
    argv = [PODPULSE, "loadtest", "--target", "twin", "--runs", "2000", "--concurrency", "2",
            "--run-id", run_id]  # fmt: skip
    proc = subprocess.Popen(
        sigint_as(sigint, argv),
        env=_clean_env() | _TWIN | twin_env | {"PROBER_RESULTS_DIR": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    csv_path = tmp_path / run_id / "requests.csv"
    deadline = time.monotonic() + 60
    while not (csv_path.exists() and len(csv_path.read_text().splitlines()) > 3):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no rows within 60 s"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def test_sigterm_writes_the_partial_summary_and_exits_130(tmp_path: Path):
    """SIGTERM (docker stop, a CI timeout) ends a twin run as Ctrl-C does: the summary of what
    finished is written, every row is kept, exit 130."""
    rc, stderr = _interrupt_mid_run(tmp_path, "term", signal.SIGTERM)
    assert rc == 130, stderr
    assert "interrupted: partial summary in" in stderr
    summary = parse_summary((tmp_path / "term" / "summary.json").read_text())
    assert summary.interrupted is True
    assert summary.end_reason is None
    assert 3 <= summary.level.requests == len(read_records(tmp_path / "term")) < 2000


def test_sigterm_ends_a_run_started_with_ctrl_c_ignored(tmp_path: Path):
    """A script's background job starts with SIGINT ignored: SIGTERM still ends the run with
    the partial summary and 130 (turned into an ignored SIGINT, it let the run go on)."""
    rc, stderr = _interrupt_mid_run(tmp_path, "bg", signal.SIGTERM, sigint=signal.SIG_IGN)
    assert rc == 130, stderr
    assert "interrupted: partial summary in" in stderr
    summary = parse_summary((tmp_path / "bg" / "summary.json").read_text())
    assert summary.interrupted is True
    assert 3 <= summary.level.requests == len(read_records(tmp_path / "bg")) < 2000


def test_ctrl_c_with_the_embedded_twin_is_quiet_and_prompt(tmp_path: Path):
    """Ctrl-C mid-run with the embedded twin: no traceback (the twin's open /runsync requests
    are ended, not cancelled by its shutdown), and the exit does not wait out the twin's 5 s
    graceful-shutdown timeout."""
    # The twin's graceful timeout is ten minutes here: an exit that waited it out would outlast
    # the minute _interrupt_mid_run gives the process, and fail there.
    rc, stderr = _interrupt_mid_run(tmp_path, "cut", signal.SIGINT, TWIN_STOP_GRACE_S="600")
    assert rc == 130, stderr
    assert "Traceback" not in stderr
    assert "CancelledError" not in stderr
    assert "graceful shutdown exceeded" not in stderr
    assert parse_summary((tmp_path / "cut" / "summary.json").read_text()).interrupted


def test_json_stdout_is_only_the_summary_with_console_spans(tmp_path: Path, twin_target: Target):
    """--json with OTEL_TRACES_EXPORTER=console: stdout parses as the summary; the runpod.job
    spans went to stderr."""
    key = twin_target.api_key if isinstance(twin_target.api_key, str) else twin_target.api_key()
    env = _clean_env() | {
        "RUNPOD_ENDPOINT_ID": twin_target.endpoint_id,
        "RUNPOD_ENDPOINT_BASE_URL": twin_target.base_url,
        "RUNPOD_API_KEY": key,
        "PROBER_RESULTS_DIR": str(tmp_path),
        "PROBER_WARMUP": "0",
        "OTEL_TRACES_EXPORTER": "console",
    }
    done = subprocess.run(
        [PODPULSE, "loadtest", "--runs", "3", "--run-id", "spans", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["run_id"] == "spans"
    assert done.stderr.count('"name": "runpod.job"') == 3
