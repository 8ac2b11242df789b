"""podpulse.common.process: settings errors at a worker's start, and ending with the twin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podpulse.common.process import settings_or_exit
from podpulse.common.settings import CommonSettings

# A stand-in twin: starts a "worker" that watches it, prints the worker's pid, then waits.
# With WRAP set, the worker is started through a shell, so the twin is not its parent. The
# worker touches MARKER once it has watched a live twin for a second without ending itself.
TWIN = """
import os, subprocess, sys
worker = "from podpulse.common.process import exit_with_parent; import os, time; " \\
    "exit_with_parent(int(os.environ['TWIN_PID'])); time.sleep(1); " \\
    "open(os.environ['MARKER'], 'w').close(); time.sleep(120)"
argv = [sys.executable, "-c", worker]
if os.environ.get("WRAP"):
    argv = ["/bin/sh", "-c", " ".join(repr(a) for a in argv) + "; true"]
env = {**os.environ, "TWIN_PID": str(os.getpid())}
proc = subprocess.Popen(argv, env=env, start_new_session=True)
print(proc.pid, flush=True)
proc.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_bad_setting_exits_2_with_one_line_naming_it_and_never_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A REDIS_URL holding a password and a wrong scheme: exit 2, the variable named, no value."""
    monkeypatch.setenv("REDIS_URL", "http://user:hunter2@redis:6379/0")
    with pytest.raises(SystemExit) as caught:
        settings_or_exit("podpulse test", CommonSettings)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("podpulse test: invalid settings in the environment: ")
    assert "REDIS_URL" in err
    assert "hunter2" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "through-a-shell"])
def test_a_worker_ends_its_process_group_once_the_twin_is_gone(
    tmp_path: Path, wrapped: bool
) -> None:
    """The worker lives while the twin does; SIGKILL the twin and the worker ends itself."""
    marker = tmp_path / "watching"
    env = {**os.environ, "WRAP": "1" if wrapped else "", "MARKER": str(marker)}
    with subprocess.Popen(
        [sys.executable, "-c", TWIN], env=env, stdout=subprocess.PIPE, text=True
    ) as twin:
        assert twin.stdout is not None
        worker_group = int(twin.stdout.readline())
        try:
            deadline = time.monotonic() + 20
            while not marker.exists():
                assert time.monotonic() < deadline, "the worker ended while its twin lived"
                time.sleep(0.05)
            os.kill(twin.pid, signal.SIGKILL)
            twin.wait()
            deadline = time.monotonic() + 20
            while _alive(worker_group):
                assert time.monotonic() < deadline, "the worker outlived its twin"
                time.sleep(0.05)
        finally:
            if _alive(worker_group):
                os.killpg(worker_group, signal.SIGKILL)
