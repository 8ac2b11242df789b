"""`podpulse twin`: flag parsing in-process, and `serve` as a user starts it, in a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from podpulse.common.net import free_port
from podpulse.common.testing import wait_until
from podpulse.twin import DEFAULT_API_KEY, CalibratedSettings, TwinSettings, cli

PODPULSE = str(Path(sys.executable).with_name("podpulse"))


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[TwinSettings, dict[str, str]]]:
    """What `serve` would have served, instead of serving it."""
    calls: list[tuple[TwinSettings, dict[str, str]]] = []

    def capture(settings: TwinSettings, *, worker_env: dict[str, str]) -> None:
        calls.append((settings, worker_env))

    monkeypatch.setattr(cli, "serve", capture)
    return calls


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.app, args, env={"COLUMNS": "200", **(env or {})})


def test_serve_flags_override_the_environment_which_overrides_defaults(
    served: list[tuple[TwinSettings, dict[str, str]]],
) -> None:
    """A flag beats its TWIN_* variable; a variable beats the default; the rest are defaults."""
    env = {"TWIN_WORKERS_MIN": "0", "TWIN_WORKERS_MAX": "7", "TWIN_CALIBRATED_JITTER": "0.5",
           "TWIN_API_KEY": "from-the-environment"}  # fmt: skip
    result = invoke(
        ["serve", "--workers-min", "3", "--exec-ms", "5", "--concurrency", "4",
         "--first-token-ms", "80", "--token-ms", "12",
         "--worker-command", "python -m 'podpulse.worker'", "--scaler-type", "request_count"],
        env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(settings, worker_env)] = served
    assert (settings.workers_min, settings.workers_max) == (3, 7)
    assert settings.scaling().scaler_type == "REQUEST_COUNT"
    # A bare python is the twin's own interpreter (no virtual environment to activate).
    assert settings.worker_command == [sys.executable, "-m", "podpulse.worker"]
    assert settings.worker_concurrency == 4
    assert settings.idle_timeout_s == 180
    assert settings.api_key.get_secret_value() == "from-the-environment"
    assert "from-the-environment" not in result.output
    given = CalibratedSettings(exec_ms=5, first_token_ms=80, token_ms=12, jitter=0.5)
    assert given.worker_env() == worker_env
    assert f"{sys.executable} -m podpulse.worker" in result.output


def test_job_loop_defaults_to_fast_and_reaches_every_worker_as_worker_job_loop(
    served: list[tuple[TwinSettings, dict[str, str]]],
) -> None:
    """--job-loop sdk runs the runpod SDK's stock loop in the workers (WORKER_JOB_LOOP=sdk),
    whatever worker command they run; without the flag it is fast."""
    assert invoke(["serve"]).exit_code == 0
    assert invoke(["serve", "--job-loop", "sdk"]).exit_code == 0
    [(default, _), (stock, _)] = served
    assert default.worker_env()["WORKER_JOB_LOOP"] == "fast"
    assert stock.worker_env()["WORKER_JOB_LOOP"] == "sdk"


def test_serve_defaults_to_the_twins_own_worker_and_the_public_key(
    served: list[tuple[TwinSettings, dict[str, str]]],
) -> None:
    """With no flags and no variables: this Python running podpulse.twin.worker, local key."""
    assert invoke(["serve"]).exit_code == 0
    [(settings, _)] = served
    assert settings.worker_command == [sys.executable, "-m", "podpulse.twin.worker"]
    assert settings.api_key.get_secret_value() == DEFAULT_API_KEY
    assert (settings.workers_min, settings.workers_max, settings.scaler_value) == (2, 5, 1)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--workers-min", "4", "--workers-max", "2"], {}, "workers_min (4) must not exceed"),
        (["--scaler-value", "0.1"], {}, "at least 0.5 seconds"),
        (["--port", "70000"], {}, "port"),
        ([], {"TWIN_WORKERS_MAX": "many"}, "TWIN_WORKERS_MAX"),
        (["--worker-command", "python -m 'unbalanced"], {}, "--worker-command"),
        (["--handler", "model"], {}, "python -m podpulse.worker"),
        ([], {"TWIN_HANDLER": "handler_without_function"}, "MODULE:FUNC"),
        (["--job-loop", "slow"], {}, "job_loop: Input should be 'fast' or 'sdk'"),
        # The prober refuses such an id as RUNPOD_ENDPOINT_ID; the twin must not serve one.
        (["--endpoint-id", "My_Endpoint"], {}, "not an endpoint id"),
    ],
)
def test_serve_refuses_bad_settings_naming_the_field(
    served: list[tuple[TwinSettings, dict[str, str]]],
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    """Bad flags or variables exit 2 with one message naming what is wrong; nothing starts."""
    result = invoke(["serve", *args], env)
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not served


def test_twin_serve_answers_health_and_runs_jobs(tmp_path: Path) -> None:
    """The installed CLI serves /health and runs jobs on its real workers; Ctrl-C stops it."""
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

    def one_idle_worker() -> bool:
        assert proc.poll() is None, output.read_text()
        try:
            workers = httpx.get(f"{url}/health", headers=headers).json()["workers"]
        except httpx.TransportError:
            return False
        return bool(workers["idle"] == 1)

    try:
        wait_until(one_idle_worker, 60, "the twin's worker")
        body = httpx.post(f"{url}/runsync", json={"input": {}}, headers=headers).json()
        assert body["status"] == "COMPLETED"
        assert body["executionTime"] < 1000  # --exec-ms 5 reached the worker
        assert list(tmp_path.glob("twin-*.log"))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
    # uvicorn re-raises the interrupt after a clean shutdown: 130 is Ctrl-C's usual status.
    assert code in (0, 130)
    assert "Traceback" not in output.read_text()
