"""``podpulse up`` end to end: real Redis, twin, prober worker and beat on loopback.

Each test runs the real command in a subprocess with a private Redis port and temporary
folders, reads its status.json, and checks with /proc that nothing it started survives it.
The timings it measures (stack start, first probe, stop) are printed for the record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stack_helpers import kill_stack, pid_alive

from podpulse.common.testing import free_port, wait_until
from podpulse.stack._procs import ProcessId, alive, descendants

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
CORE = {"redis", "twin", "prober-worker", "prober-beat"}


@dataclass
class Stack:
    process: subprocess.Popen[str]
    log_dir: Path
    results_dir: Path
    started: float

    def status(self) -> dict | None:
        try:
            return json.loads((self.log_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def services(self) -> dict[str, dict]:
        status = self.status() or {"services": []}
        return {row["name"]: row for row in status["services"]}

    def output(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.read()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    env = {
        **os.environ,
        # Small and quick: one warm twin worker, 100 ms jobs, a three-request smoke.
        "TWIN_WORKERS_MIN": "1",
        "TWIN_WORKERS_MAX": "1",
        "TWIN_CALIBRATED_EXEC_MS": "100",
        "PROBER_SMOKE_RUNS": "3",
        "PROBER_WARMUP": "0",
        "STACK_PROBER_CONCURRENCY": "1",
        "STACK_RESTART_BASE_S": "0.5",
        "RUNPOD_API_KEY": "rpa_not_for_the_stack_children",
        "COLUMNS": "160",
    }
    env.pop("RUNPOD_ENDPOINT_ID", None)
    log_dir, results_dir = tmp_path / "logs", tmp_path / "results"
    argv = [PODPULSE, "up", "--redis-url", f"redis://127.0.0.1:{free_port()}/0",
            "--twin-port", str(free_port()), "--otlp-port", str(free_port()),
            "--log-dir", str(log_dir), "--results-dir", str(results_dir)]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    running = Stack(process, log_dir, results_dir, started)
    try:
        yield running
    finally:
        kill_stack(process)


def _wait_ready(stack: Stack, timeout_s: float = 60) -> float:
    def ready() -> bool:
        assert stack.process.poll() is None, stack.output()
        rows = stack.services()
        return rows.keys() >= CORE and all(rows[n]["state"] == "ready" for n in CORE)

    wait_until(ready, timeout_s=timeout_s, what="every service ready", poll_s=0.1)
    return time.monotonic() - stack.started


def _stop(stack: Stack, sig: signal.Signals) -> tuple[float, set[ProcessId], str]:
    children = descendants(stack.process.pid)
    assert children, "the stack had no child processes"
    sent = time.monotonic()
    stack.process.send_signal(sig)
    stack.process.wait(timeout=30)
    took = time.monotonic() - sent
    # Reparented to init, a straggler might still be dying; give it the same few seconds.
    wait_until(lambda: not any(alive(p) for p in children), timeout_s=5, what="no child left")
    return took, children, stack.output()


def test_up_runs_a_scheduled_smoke_and_ctrl_c_stops_everything(stack: Stack) -> None:
    """The twin, prober worker and beat come up ready; beat's first smoke completes against
    the twin; the alerter and its worker come up too; SIGINT stops everything, exit 0, and
    leaves no process (stop times are printed, not judged: the supervisor's grace bounds them)."""
    up_s = _wait_ready(stack)
    status = stack.status()
    assert status is not None
    # The alerter is installed: its rows run, and the view reads ALERTS off its /metrics.
    assert status["alerts"] == []
    wait_until(lambda: all(stack.services().get(n, {}).get("state") == "ready"
                           for n in ("alerter", "alerter-worker")),
               timeout_s=60, what="the alerter and its worker ready")  # fmt: skip

    def summary() -> Path | None:
        found = list(stack.results_dir.glob("smoke-*/summary.json"))
        return found[0] if found else None

    path = wait_until(summary, timeout_s=45, what="a smoke summary", poll_s=0.2)
    first_probe_s = time.monotonic() - stack.started  # scheduled 15 s after beat starts
    result = json.loads(path.read_text())
    assert result["passed"] is True
    assert result["target"]["base_url"].startswith("http://127.0.0.1:")
    wait_until(lambda: (stack.status() or {}).get("last_probe_run_id"), timeout_s=10,
               what="the probe in status.json")  # fmt: skip

    took, children, output = _stop(stack, signal.SIGINT)
    assert stack.process.returncode == 0, output
    assert "stack up in" in output
    assert "ready" in output
    assert "stopped in" in output
    sys.stderr.write(
        f"\nstack start {up_s:.1f} s; first probe {first_probe_s:.1f} s; stop {took:.1f} s "
        f"({len(children)} processes)\n"
    )


def test_a_killed_service_is_restarted_and_sigterm_stops_everything(stack: Stack) -> None:
    """A prober worker killed with SIGKILL is reported, restarted and ready again; the
    children never hold the user's RunPod key; SIGTERM stops everything, nothing left."""
    _wait_ready(stack)
    before = stack.services()["prober-worker"]
    environ = Path(f"/proc/{before['pid']}/environ").read_bytes().split(b"\0")
    assert b"RUNPOD_API_KEY=rpa_not_for_the_stack_children" not in environ
    killed = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict | None:
        row = stack.services()["prober-worker"]
        fresh = row["state"] == "ready" and row["pid"] != before["pid"]
        return row if fresh and row["restarts"] == 1 else None

    row = wait_until(restarted, timeout_s=40, what="the worker restarted", poll_s=0.1)
    back_s = time.monotonic() - killed
    assert not pid_alive(before["pid"])
    took, _, output = _stop(stack, signal.SIGTERM)
    assert "prober-worker was killed by SIGKILL; restart 1" in output
    sys.stderr.write(
        f"\nkilled worker ready again in {back_s:.1f} s (restarts {row['restarts']}); "
        f"stop {took:.1f} s\n"
    )
