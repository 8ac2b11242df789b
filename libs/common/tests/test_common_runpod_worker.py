"""podpulse.common.runpod_worker: the SDK code the fast job loop was verified against, and
which scaler ``serve`` runs. The loop's timing is tested on the twin with real workers
(libs/twin/tests/test_twin_job_loop.py)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

# First: podpulse imports runpod without the second Python that py-cpuinfo starts for it.
from podpulse.common import runpod_worker
from podpulse.common.runpod_worker import (
    SDK_VERIFIED,
    FastJobScaler,
    GatedPingMirror,
    sdk_drift,
    serve,
)

# isort: split
from runpod import serverless
from runpod.serverless.modules import rp_scale, worker_state


def test_the_installed_runpod_sdk_is_the_one_the_fast_loop_was_verified_on() -> None:
    """Every SDK function the fast loop calls, inherits or replaces has the verified source.

    When this fails after a runpod upgrade: read the named functions' new source, check that
    FastJobScaler still does all they do, then record their digests in SDK_VERIFIED and move
    the runpod pin in libs/common/pyproject.toml."""
    assert sdk_drift() == []


def test_a_changed_or_missing_sdk_function_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest that no longer matches, and a function that is gone, are both reported."""
    changed = "runpod.serverless.modules.rp_scale:JobScaler.get_jobs"
    gone = "runpod.serverless.modules.rp_scale:JobScaler.no_such_method"
    monkeypatch.setitem(SDK_VERIFIED, changed, "0" * 16)
    monkeypatch.setitem(SDK_VERIFIED, gone, "0" * 16)
    assert sdk_drift() == [changed, gone]


def test_the_fast_scaler_overrides_the_sdks_sleeping_methods() -> None:
    """get_jobs, run_jobs, set_scale and current_occupancy are podpulse's; the rest the SDK's."""
    own = {"get_jobs", "run_jobs", "set_scale", "current_occupancy", "handle_job", "run",
           "kill_worker"}  # fmt: skip
    for name in own:
        assert getattr(FastJobScaler, name) is not getattr(rp_scale.JobScaler, name), name
    for name in ("monitor_stop_signals", "stop_job", "is_alive", "start", "handle_shutdown"):
        assert getattr(FastJobScaler, name) is getattr(rp_scale.JobScaler, name), name


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """What the SDK's run_worker would build, for each serverless.start call: the scaler (a
    class, or a partial of one) and the mirror it hands the heartbeat process."""
    seen: list[tuple[Any, Any]] = []

    def start(_config: dict[str, Any]) -> None:
        seen.append((rp_scale.JobScaler, worker_state.PingJobMirror()))

    monkeypatch.setattr(serverless, "start", start)
    # The stand-in for start is not the verified start, which is not what these tests are about.
    monkeypatch.setattr(runpod_worker, "sdk_drift", list)
    return seen


def test_serve_runs_the_fast_scaler_for_fast_and_the_stock_one_for_sdk(
    started: list[tuple[Any, Any]],
) -> None:
    """fast: FastJobScaler beating the gate the heartbeat reads, for the length of the call;
    the SDK's own scaler and mirror again after it, and for sdk."""
    stock, stock_mirror = rp_scale.JobScaler, worker_state.PingJobMirror
    serve({"handler": print}, "fast")
    serve({"handler": print}, "sdk")
    (fast, gate), (sdk, sdk_mirror) = started
    assert isinstance(fast, functools.partial)
    assert fast.func is FastJobScaler
    assert isinstance(gate, GatedPingMirror)
    assert fast.keywords == {"gate": gate}
    assert (sdk, type(sdk_mirror)) == (stock, stock_mirror)
    assert (rp_scale.JobScaler, worker_state.PingJobMirror) == (stock, stock_mirror)


def test_serve_falls_back_to_the_stock_loop_on_an_sdk_it_was_not_verified_on(
    started: list[tuple[Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed SDK whose code differs runs the stock loop rather than an unverified one."""
    monkeypatch.setattr(runpod_worker, "sdk_drift", lambda: ["runpod.serverless:start"])
    serve({"handler": print}, "fast")
    assert [(scaler, type(mirror)) for scaler, mirror in started] == [
        (rp_scale.JobScaler, worker_state.PingJobMirror)
    ]


class _Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_heartbeat_is_withheld_while_the_job_loop_is_stalled() -> None:
    """The heartbeat process's read of the job ids (made before every ping) answers at once
    while the loop beats, and waits, sending no ping, from a stall until the next beat."""
    clock = _Clock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds
        if len(waits) == 3:
            gate.beat()  # the loop runs again (SIGCONT, or the blocking call returned)

    gate = GatedPingMirror(stall_limit_s=1.0, clock=clock, sleep=sleep)
    gate.set("job-1")
    clock.now += 1.0
    assert gate.get() == "job-1"
    assert waits == []
    clock.now += 0.5  # 1.5 s since the last beat
    assert gate.stalled()
    assert gate.get() == "job-1"
    assert len(waits) == 3
    assert not gate.stalled()


async def test_the_fast_loop_beats_the_gate_while_its_event_loop_runs() -> None:
    """The scaler's beat task beats over and over (a quarter of the stall limit apart) for as
    long as its event loop runs it."""
    beaten = asyncio.Event()
    beats = 0
    gate = GatedPingMirror(stall_limit_s=0.004)

    def beat() -> None:
        nonlocal beats
        beats += 1
        if beats == 3:
            beaten.set()

    gate.beat = beat  # type: ignore[method-assign]  # counts the beats instead
    task = asyncio.create_task(FastJobScaler._keep_beating(gate))
    await asyncio.wait_for(beaten.wait(), 10)
    task.cancel()
    assert beats >= 3


_LOCAL_WORKER = """
import sys
from podpulse.common.runpod_worker import serve

async def handler(job):
    yield {"text": "CANARY-one"}
    if job["input"].get("fail"):
        yield {"error": "the second step failed"}
        return
    yield {"text": "CANARY-two"}

serve({"handler": handler, "return_aggregate_stream": True}, sys.argv[1])
"""


@pytest.mark.parametrize("job_loop", ["fast", "sdk"])
def test_the_sdks_local_test_runs_a_generator_handler(tmp_path, job_loop: str) -> None:
    """`--test_input` (an image's build check) runs every step of a generator handler and
    reports the outputs as the platform aggregates them; a yielded error fails it (the SDK
    awaited the generator object and called that a success without running it)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "local_worker.py"
    script.write_text(_LOCAL_WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}

    def run(job_input: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(script), job_loop, "--test_input", job_input]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    done = run('{"input": {}}')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CANARY-one" in done.stdout
    assert "CANARY-two" in done.stdout
    failed = run('{"input": {"fail": true}}')
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "the second step failed" in failed.stdout + failed.stderr
