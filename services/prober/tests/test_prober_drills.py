"""Fault drills on real processes: the twin serving a `podpulse loadtest` is SIGKILLed mid-run.
The run ends in bounded time with its reason, and nothing already measured is lost. (Redis
restarted under a Celery-run probe is drilled in test_celery_runs.py, next to its helpers.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from podpulse.common.net import free_port
from podpulse.common.request_records import Outcome, read_records
from podpulse.common.summary import parse_summary
from podpulse.common.testing import wait_until

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
_KEY = "drill-key"
_ENDPOINT = "ep-drill"


def _clean_env() -> dict[str, str]:
    prefixes = ("RUNPOD_", "PROBER_", "TWIN_", "OTEL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _children(pid: int) -> list[int]:
    """Pids whose parent is *pid* (read from /proc; the twin's workers run in new sessions)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces; the ppid follows it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _ready(base_url: str) -> bool:
    try:
        health = httpx.get(
            f"{base_url}/{_ENDPOINT}/health", headers={"Authorization": f"Bearer {_KEY}"}
        ).json()
    except httpx.HTTPError:
        return False
    return bool(health["workers"]["idle"] >= 1)


@contextmanager
def standalone_twin(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`podpulse twin serve` as its own process (one worker, 30 ms jobs); its workers are
    killed by pid afterwards, since a SIGKILLed twin cannot stop them itself."""
    port = free_port()
    env = _clean_env() | {
        "TWIN_API_KEY": _KEY,
        "TWIN_ENDPOINT_ID": _ENDPOINT,
        "TWIN_STOP_GRACE_S": "0.3",
        "TWIN_CALIBRATED_DISTRIBUTION": "fixed",
        "TWIN_LOG_DIR": str(tmp_path / "twin-logs"),
        "PODPULSE_LOG_LEVEL": "WARNING",
    }
    with (tmp_path / "twin.log").open("wb") as log:
        twin = subprocess.Popen(
            [PODPULSE, "twin", "serve", "--port", str(port), "--workers-min", "1",
             "--workers-max", "1", "--concurrency", "4", "--exec-ms", "30"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v2"
    workers: list[int] = []
    try:
        wait_until(lambda: _ready(base_url) or twin.poll() is not None, 60, "the twin's worker")
        assert twin.poll() is None, (tmp_path / "twin.log").read_text()
        workers = _children(twin.pid)
        yield twin, base_url
    finally:
        for pid in [*workers, *_children(twin.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if twin.poll() is None:
            twin.kill()
        twin.wait()


def test_twin_killed_mid_run_ends_the_run_with_its_reason(tmp_path: Path):
    """SIGKILL of the twin serving a 120 s loadtest (concurrency 4, hosted-style settings): the
    run ends within seconds with exit 3 and the endpoint-unreachable reason; every row measured
    before the kill is in requests.csv and the summary, and the failed rows after it are few."""
    results = tmp_path / "results"
    with standalone_twin(tmp_path) as (twin, base_url):
        env = _clean_env() | {
            "RUNPOD_ENDPOINT_ID": _ENDPOINT,
            "RUNPOD_ENDPOINT_BASE_URL": base_url,
            "RUNPOD_API_KEY": _KEY,
            "PROBER_RESULTS_DIR": str(results),
            "PROBER_WARMUP": "0",
        }
        probe = subprocess.Popen(
            [PODPULSE, "loadtest", "--duration", "120", "--concurrency", "4", "--run-id",
             "killed", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        folder = results / "killed"
        wait_until(
            lambda: (folder / "requests.csv").exists() and len(read_records(folder)) >= 20,
            60,
            "rows before the fault",
        )
        before = len(read_records(folder))
        twin.send_signal(signal.SIGKILL)
        killed_at, fault = time.time(), time.monotonic()
        stdout, stderr = probe.communicate(timeout=60)
        fault_to_end_s = time.monotonic() - fault
    print(f"drill twin-killed: fault to end {fault_to_end_s:.2f} s")  # noqa: T201 - the report's figure
    assert probe.returncode == 3, stderr
    assert "aborted: endpoint unreachable: 20 requests in a row" in stderr
    records = read_records(folder)
    summary = parse_summary((folder / "summary.json").read_text())
    assert json.loads(stdout)["end_reason"] == summary.end_reason
    assert summary.level.requests == len(records)
    assert sum(r.ok and r.done < killed_at for r in records) >= before
    assert len(records) >= before
    failed_after = [r for r in records if r.done >= killed_at and not r.ok]
    assert 1 <= len(failed_after) <= 24
    assert all(r.outcome is Outcome.HTTP_ERROR for r in failed_after)
