"""`python -m podpulse.twin.worker`: which handler it serves, and how it refuses bad settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from twin_helpers import TESTS, calibrated, small

from podpulse.twin import running_twin
from podpulse.twin.worker import HandlerError, load_handler, runpod_config


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWIN_", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "podpulse.twin.worker"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_bad_redis_url_exits_2_in_one_line_without_its_value() -> None:
    """REDIS_URL with a password and a wrong scheme: exit 2, one line naming it, no password."""
    done = _start({"REDIS_URL": "http://user:hunter2@redis:6379/0"})
    assert done.returncode == 2
    assert "hunter2" not in done.stderr + done.stdout
    assert "REDIS_URL" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_calibrated_setting_exits_2_naming_the_field() -> None:
    """TWIN_CALIBRATED_EXEC_MS=-5 is refused before the SDK starts, naming exec_ms."""
    done = _start({"TWIN_CALIBRATED_EXEC_MS": "-5"})
    assert done.returncode == 2
    assert "TWIN_CALIBRATED_EXEC_MS" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_calibrated_config_runs_jobs_at_the_configured_concurrency() -> None:
    """TWIN_HANDLER=calibrated: an async handler drawing from CalibratedSettings."""
    config = runpod_config(small(worker_concurrency=3), calibrated(exec_ms=1))
    assert config["concurrency_modifier"](1) == 3
    assert "return_aggregate_stream" not in config
    out = asyncio.run(config["handler"]({"id": "j", "input": {"output_tokens": 4}}))
    assert out["model"] == "calibrated"
    assert out["usage"]["output_tokens"] == 4


def test_a_calibrated_job_refuses_a_progress_that_is_not_text() -> None:
    """A "progress" that is not a string is the job's error, before any wait."""
    config = runpod_config(small(), calibrated(exec_ms=10_000))
    out = asyncio.run(config["handler"]({"id": "j", "input": {"progress": 25}}))
    assert out == {"error": "progress must be a string"}


def test_generator_handlers_stream_and_return_the_aggregate() -> None:
    """calibrated-stream is a generator handler, so /status carries every streamed output."""
    config = runpod_config(small(handler="calibrated-stream"), calibrated())
    assert config["return_aggregate_stream"] is True


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("calibrated-typo", "expected 'calibrated', 'calibrated-stream' or MODULE:FUNC"),
        ("no_such_module:handler", "cannot be loaded"),
        ("json:no_such_function", "cannot be loaded"),
        ("json:__doc__", "is not callable"),
    ],
)
def test_a_handler_that_cannot_be_served_is_named_with_the_reason(spec: str, reason: str) -> None:
    """Bad TWIN_HANDLER values raise HandlerError naming the value and what is wrong."""
    with pytest.raises(HandlerError, match=reason) as caught:
        load_handler(spec)
    assert spec in str(caught.value)


def test_a_module_func_handler_serves_jobs_through_the_twin() -> None:
    """TWIN_HANDLER=json:dumps: any importable function is a handler; its result is the output."""
    with running_twin(small(handler="json:dumps"), calibrated()) as twin, twin.client() as api:
        body = api.post("/runsync", json={"input": {"echo": 7}}).json()
    assert body["status"] == "COMPLETED"
    assert '"echo": 7' in body["output"]


def test_settings_given_to_the_twin_beat_the_environment_in_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent's TWIN_CALIBRATED_ERROR_RATE=1 loses to CalibratedSettings(error_rate=0) in
    the workers: the twin hands each worker its settings under their real variable names."""
    monkeypatch.setenv("TWIN_CALIBRATED_ERROR_RATE", "1")
    monkeypatch.setenv("TWIN_HANDLER", "calibrated-stream")
    given = calibrated(error_rate=0.0)
    assert set(given.worker_env()) >= {"TWIN_CALIBRATED_ERROR_RATE", "TWIN_CALIBRATED_EXEC_MS"}
    with running_twin(small(handler="calibrated"), given) as twin, twin.client() as api:
        body = api.post("/runsync", json={"input": {"exec_ms": 5}}).json()
    assert body["status"] == "COMPLETED", body
    assert body["output"]["model"] == "calibrated"  # the plain handler, not the stream one


def test_workers_never_inherit_podpulse_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """RUNPOD_API_KEY, the webhook URLs and their *_FILE variables stay out of every worker's
    environment, whatever handler it runs; ordinary variables still reach it."""
    for name in ("RUNPOD_API_KEY", "SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL", "RUNPOD_API_KEY_FILE"):
        monkeypatch.setenv(name, "/run/secrets/x" if name.endswith("_FILE") else "secret-value")
    monkeypatch.setenv("PODPULSE_TEST_MARKER", "1")
    with (
        running_twin(
            small(handler="env_handler:handler"), calibrated(), worker_env={"PYTHONPATH": TESTS}
        ) as twin,
        twin.client() as api,
    ):
        body = api.post("/runsync", json={"input": {}}).json()
    assert body["status"] == "COMPLETED", body
    names = set(body["output"])
    assert "PODPULSE_TEST_MARKER" in names
    assert not names & {"RUNPOD_API_KEY", "SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL",
                        "RUNPOD_API_KEY_FILE"}  # fmt: skip
