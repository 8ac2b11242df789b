"""`podpulse twin serve` as a user starts it: a real server process with real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from podpulse.common.testing import free_port
from podpulse.worker.twin import DEFAULT_API_KEY

PODPULSE = str(Path(sys.executable).with_name("podpulse"))


def test_twin_serve_answers_health_and_runs_jobs(tmp_path: Path) -> None:
    """The CLI serves /health and runs jobs on its real workers, and stops on Ctrl-C."""
    port = free_port()
    output = tmp_path / "serve.out"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [PODPULSE, "twin", "serve", "--port", str(port), "--workers-min", "1",
             "--workers-max", "2", "--exec-ms", "5", "--log-dir", str(tmp_path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v2/podpulse-twin"
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, output.read_text()
            try:
                workers = httpx.get(f"{url}/health", headers=headers).json()["workers"]
                if workers["idle"] == 1:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "twin did not come up"
            time.sleep(0.1)
        body = httpx.post(f"{url}/runsync", json={"input": {}}, headers=headers).json()
        assert body["status"] == "COMPLETED"
        assert list(tmp_path.glob("twin-*.log"))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
    # uvicorn re-raises the interrupt after a clean shutdown: 130 is Ctrl-C's usual status.
    assert code in (0, 130)
    assert "Traceback" not in output.read_text()


def test_twin_serve_rejects_bad_settings_clearly() -> None:
    """workersMin above workersMax and a tiny queue delay are refused, naming the field."""
    env = {**os.environ, "COLUMNS": "200"}
    bad = subprocess.run(
        [PODPULSE, "twin", "serve", "--workers-min", "4", "--workers-max", "2"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "workers" in bad.stderr.lower()
    delay = subprocess.run(
        [PODPULSE, "twin", "serve", "--scaler-value", "0.1"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert delay.returncode == 2
    assert "0.5" in delay.stderr
