"""podpulse.common.runpod_worker: the SDK code the fast job loop was verified against, and
which scaler ``serve`` runs. The loop's timing is tested on the twin with real workers
(libs/twin/tests/test_twin_job_loop.py)."""

from __future__ import annotations

from typing import Any

import pytest

# First: podpulse imports runpod without the second Python that py-cpuinfo starts for it.
from podpulse.common import runpod_worker
from podpulse.common.runpod_worker import SDK_VERIFIED, FastJobScaler, sdk_drift, serve

# isort: split
from runpod import serverless
from runpod.serverless.modules import rp_scale


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
def started(monkeypatch: pytest.MonkeyPatch) -> list[type[Any]]:
    """The scaler class the SDK's run_worker would build, for each serverless.start call."""
    seen: list[type[Any]] = []
    monkeypatch.setattr(serverless, "start", lambda _config: seen.append(rp_scale.JobScaler))
    # The stand-in for start is not the verified start, which is not what these tests are about.
    monkeypatch.setattr(runpod_worker, "sdk_drift", list)
    return seen


def test_serve_runs_the_fast_scaler_for_fast_and_the_stock_one_for_sdk(
    started: list[type[Any]],
) -> None:
    """fast: FastJobScaler for the length of the call, the SDK's own class again after it."""
    stock = rp_scale.JobScaler
    serve({"handler": print}, "fast")
    serve({"handler": print}, "sdk")
    assert started == [FastJobScaler, stock]
    assert rp_scale.JobScaler is stock


def test_serve_falls_back_to_the_stock_loop_on_an_sdk_it_was_not_verified_on(
    started: list[type[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed SDK whose code differs runs the stock loop rather than an unverified one."""
    monkeypatch.setattr(runpod_worker, "sdk_drift", lambda: ["runpod.serverless:start"])
    serve({"handler": print}, "fast")
    assert started == [rp_scale.JobScaler]
