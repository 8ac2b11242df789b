"""The canary: every `podpulse endpoint` and `podpulse keys` command, run as a real process
with DEBUG JSON logs and console spans, on success and failure paths, never shows a key in
its output, its logs, the files it writes or the events it puts on Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from podpulse.common.testing import redis_server
from podpulse.twin import RunningTwin, TwinSettings, running_twin

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
OLD = "rpa_CANARYOLD" + "0" * 32
NEW = "rpa_CANARYNEW" + "1" * 32
WRONG = "rpa_CANARYWRONG" + "5" * 30
CANARIES = (OLD, NEW, WRONG)

TOML = """\
[endpoint]
id = "podpulse-twin"
image = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04"
model = "Puneetrinity/qwen2-7b-career"
model_size_gb = 22.69
gpu = "NVIDIA GeForce RTX 4090"

[endpoint.workers]
min = 0
max = 2
idle_timeout_s = 30

[endpoint.scaling]
type = "QUEUE_DELAY"
value = 2
"""


@pytest.fixture(scope="module")
def twin() -> Iterator[RunningTwin]:
    """A twin (no workers) that accepts only the NEW key."""
    settings = TwinSettings(workers_min=0, workers_max=1, api_key=SecretStr(NEW), stop_grace_s=0.3)
    with running_twin(settings, wait_ready=False) as running:
        yield running


def test_no_command_shows_a_key_anywhere(twin: RunningTwin, tmp_path: Path) -> None:
    """Rotate (accepted, refused, malformed), then show/diff/apply/update/history (and a
    refused key): no canary key in stdout, stderr, DEBUG logs, written files or Redis."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "podpulse.toml").write_text(TOML)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    key_file = secrets / "runpod_api_key"
    key_file.write_text(OLD + "\n")
    wrong_file = secrets / "wrong"
    wrong_file.write_text(WRONG)
    new_file = secrets / "new"
    new_file.write_text(NEW + "\n")
    bad_file = secrets / "bad"
    bad_file.write_text(f"RUNPOD_API_KEY={NEW} # with a comment\n")
    with redis_server() as redis_url:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "TAGGER_"))}
        env = {
            **base,
            "RUNPOD_API_KEY_FILE": str(key_file),
            "RUNPOD_ENDPOINT_BASE_URL": twin.base_url,
            "RUNPOD_MANAGEMENT_BASE_URL": twin.base_url,
            "REDIS_URL": redis_url,
            "TAGGER_ENDPOINT_HISTORY_FILE": str(work / ".podpulse" / "history.jsonl"),
            "PODPULSE_LOG_LEVEL": "DEBUG",
            "PODPULSE_LOG_FORMAT": "json",
            "OTEL_TRACES_EXPORTER": "console",
        }
        runs: list[tuple[list[str], dict[str, str], int]] = [
            (["keys", "rotate", "--new-key-file", str(wrong_file)], {}, 1),
            (["keys", "rotate", "--new-key-file", str(bad_file)], {}, 2),
            (["keys", "rotate", "--new-key-file", str(new_file)], {"RUNPOD_API_KEY": OLD}, 2),
            (["keys", "rotate", "--new-key-file", str(new_file)], {}, 0),
            (["keys", "rotate", "--new-key-file", str(new_file)], {}, 2),  # already in use
            (["endpoint", "show"], {}, 0),
            (["endpoint", "show", "--json"], {"RUNPOD_API_KEY": NEW}, 0),
            (["endpoint", "show"], {"RUNPOD_API_KEY_FILE": str(wrong_file)}, 3),
            (["endpoint", "show"], {"RUNPOD_API_KEY": WRONG}, 3),
            (["endpoint", "diff"], {}, 1),
            (["endpoint", "apply", "--dry-run"], {}, 0),
            (["endpoint", "apply", "--yes"], {}, 0),
            (["endpoint", "update", "--workers-max", "1", "--dry-run"], {}, 0),
            (["endpoint", "update", "--workers-max", "1", "--yes"], {}, 0),
            (["endpoint", "update", "--workers-max", WRONG], {}, 2),
            (["endpoint", "history"], {}, 0),
            (["endpoint", "history", "--json"], {}, 0),
        ]
        seen: list[str] = []
        for args, extra, code in runs:
            done = subprocess.run(
                [PODPULSE, *args], env={**env, **extra}, cwd=work, capture_output=True,
                text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == code, (args, done.stdout, done.stderr)
            seen.append(f"{done.stdout}\n{done.stderr}")
        client = redis.Redis.from_url(redis_url)
        stored = [repr(client.dump(key)) for key in client.keys("*")]
        client.close()
    assert key_file.read_text() == NEW + "\n"
    written = {
        path: path.read_bytes().decode("utf-8", "replace")
        for path in tmp_path.rglob("*")
        if path.is_file() and path.parent != secrets
    }
    assert (work / ".podpulse" / "history.jsonl") in written
    assert stored, "the applied changes' events are on Redis"
    logs = "\n".join(seen)
    assert '"level": "debug"' in logs or '"level":"debug"' in logs, logs[-2000:]
    for canary in CANARIES:
        assert canary not in logs, canary
        assert not [str(p) for p, text in written.items() if canary in text], canary
        assert not [s for s in stored if canary in s], canary
    # The only place a key lives is the key file (and the files the user gave).
    assert sorted(p.name for p in secrets.iterdir()) == ["bad", "new", "runpod_api_key", "wrong"]
