"""Worker secrets: a worker's environment holds no secret of the twin's, only its own token,
and that token opens only its own worker routes; the public key comes from TWIN_API_KEY or
TWIN_API_KEY_FILE, never a flag."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from twin_helpers import TESTS, calibrated, small
from typer.testing import CliRunner

from podpulse.common.settings import describe_settings_error
from podpulse.common.testing import wait_until
from podpulse.twin import TwinSettings, cli, running_twin


def test_a_workers_environment_holds_no_canary_and_no_public_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With every secret set to a canary, a MODULE:FUNC handler reading its environment finds
    none of them, nor the twin's public key (under any name), only its own worker token."""
    canary = f"canary-{uuid.uuid4().hex}"
    public = f"{canary}-public"
    (tmp_path / "key").write_text(canary)
    for name in ("RUNPOD_API_KEY", "SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL"):
        monkeypatch.setenv(name, canary)
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("TWIN_API_KEY", public)
    monkeypatch.setenv("TWIN_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("SOME_COPY_OF_THE_KEY", public)
    settings = small(handler="env_handler:environment")
    assert settings.api_key.get_secret_value() == public  # read from TWIN_API_KEY
    with (
        running_twin(settings, calibrated(), worker_env={"PYTHONPATH": TESTS}) as twin,
        twin.client() as api,
    ):
        body = api.post("/runsync", json={"input": {}}).json()
        assert body["status"] == "COMPLETED", body
        worker = twin.platform.pool.workers[body["workerId"]]
    env: dict[str, str] = body["output"]
    leaked = sorted(name for name, value in env.items() if canary in value)
    assert leaked == []
    assert not set(env) & {"TWIN_API_KEY", "TWIN_API_KEY_FILE", "RUNPOD_API_KEY_FILE"}
    assert env["RUNPOD_AI_API_KEY"] == worker.token


def _worker_call(twin: Any, worker_id: str, token: str) -> int:
    url = f"{twin.endpoint_url}/ping/{worker_id}?gpu=twin"
    return httpx.get(url, headers={"Authorization": token}).status_code


def test_a_worker_token_opens_only_its_own_worker_routes() -> None:
    """Worker A's token pings as A, not as B; the public key opens no worker route, and a
    worker token opens no public or management route."""
    with running_twin(small(workers_min=2, workers_max=2), calibrated()) as twin:
        first, second = twin.platform.pool.workers.values()
        assert first.token != second.token
        assert _worker_call(twin, first.id, first.token) == 200
        assert _worker_call(twin, second.id, first.token) == 401
        assert _worker_call(twin, first.id, twin.api_key) == 401
        take = f"{twin.endpoint_url}/job-take/{second.id}?gpu=twin"
        assert httpx.get(take, headers={"Authorization": first.token}).status_code == 401
        worker = {"Authorization": f"Bearer {first.token}"}
        public: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", f"{twin.endpoint_url}/run", {"input": {}}),
            ("POST", f"{twin.endpoint_url}/runsync", {"input": {}}),
            ("GET", f"{twin.endpoint_url}/status/anything", None),
            ("GET", f"{twin.endpoint_url}/health", None),
            ("GET", f"{twin.base_url}/serverless/{twin.endpoint_id}", None),
            ("PATCH", f"{twin.base_url}/serverless/{twin.endpoint_id}", {"workers": {"max": 3}}),
        ]
        for method, url, body in public:
            answer = httpx.request(method, url, json=body, headers=worker)
            assert answer.status_code == 401, (method, url)
        assert twin.platform.scaling.workers_max == 2


def test_a_dead_workers_token_is_refused_and_it_cannot_rejoin() -> None:
    """Once a worker is gone its token opens nothing: a late call under its id is refused
    instead of being taken for an external worker joining."""
    with running_twin(small(), calibrated()) as twin:
        [record] = twin.platform.pool.workers.values()
        assert record.process is not None
        os.killpg(record.process.pid, signal.SIGKILL)
        wait_until(lambda: record.id not in twin.platform.pool.workers, 15, "the worker to go")
        assert _worker_call(twin, record.id, record.token) == 401
        assert record.id not in twin.platform.pool.workers


def test_the_key_comes_from_twin_api_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TWIN_API_KEY_FILE is read (stripped) when TWIN_API_KEY is unset or empty; the
    variable wins when both are set."""
    path = tmp_path / "key"
    path.write_text("from-the-file\n")
    monkeypatch.setenv("TWIN_API_KEY_FILE", str(path))
    assert TwinSettings().api_key.get_secret_value() == "from-the-file"
    monkeypatch.setenv("TWIN_API_KEY", "")
    assert TwinSettings().api_key.get_secret_value() == "from-the-file"
    monkeypatch.setenv("TWIN_API_KEY", "from-the-variable")
    assert TwinSettings().api_key.get_secret_value() == "from-the-variable"


@pytest.mark.parametrize(("content", "expected"), [(None, "cannot be read"), ("  \n", "is empty")])
def test_an_unusable_key_file_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, expected: str
) -> None:
    """A missing or empty TWIN_API_KEY_FILE is an error naming it, not the public key."""
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("TWIN_API_KEY_FILE", str(path))
    with pytest.raises(ValidationError) as caught:
        TwinSettings()
    message = describe_settings_error(caught.value)
    assert f"TWIN_API_KEY_FILE={path} {expected}" in message


def test_serve_refuses_an_api_key_flag_and_reads_the_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`serve --api-key` exits 2 naming TWIN_API_KEY and TWIN_API_KEY_FILE, the value never
    echoed; with TWIN_API_KEY_FILE set, serve uses the file's key."""
    served: list[TwinSettings] = []
    monkeypatch.setattr(cli, "serve", lambda settings, **_: served.append(settings))
    runner = CliRunner()
    refused = runner.invoke(cli.app, ["serve", "--api-key", "sekrit-value"])
    assert refused.exit_code == 2
    assert "TWIN_API_KEY" in refused.output
    assert "TWIN_API_KEY_FILE" in refused.output
    assert "sekrit-value" not in refused.output
    assert not served
    (tmp_path / "key").write_text("key-from-file")
    result = runner.invoke(cli.app, ["serve"], env={"TWIN_API_KEY_FILE": str(tmp_path / "key")})
    assert result.exit_code == 0, result.output
    [settings] = served
    assert settings.api_key.get_secret_value() == "key-from-file"
