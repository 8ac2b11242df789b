"""`python -m podpulse.worker`: settings are checked before anything loads, values never shown."""

from __future__ import annotations

import os
import subprocess
import sys


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "podpulse.worker"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_bad_redis_url_exits_2_in_one_line_without_its_value() -> None:
    """REDIS_URL with a password and a wrong scheme: exit 2, one line naming it, no password."""
    done = _start({"REDIS_URL": "http://user:hunter2@redis:6379/0"})
    assert done.returncode == 2
    assert "hunter2" not in done.stderr + done.stdout
    assert "REDIS_URL" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_worker_setting_exits_2_naming_it_before_the_model_loads() -> None:
    """WORKER_QUANTIZATION=int3 is refused at start, naming quantization; no model is loaded."""
    done = _start({"WORKER_QUANTIZATION": "int3", "WORKER_MODEL_ID": "/no/such/model"})
    assert done.returncode == 2
    assert "WORKER_QUANTIZATION" in done.stderr
    assert "no such folder" not in done.stderr
