"""Fixtures for the release tests: a fresh git repository, and podpulse run as a real process
on the file's private Redis (``redis_url``, from podpulse.common.testing's plugin), where
release events land on its notify queue."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from release_helpers import PODPULSE, PODPULSE_TOML, GitRepo, Ran, RunCli

from podpulse.common.testing import free_port


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on: a Redis that is down."""
    return free_port()


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """A fresh repository: podpulse.toml and a README committed on main."""
    root = tmp_path / "app"
    root.mkdir()
    repo = GitRepo(root)
    repo.git("init", "-q", "-b", "main")
    repo.git("config", "user.name", "Release Tester")
    repo.git("config", "user.email", "release@example.invalid")
    repo.git("config", "commit.gpgsign", "false")
    repo.git("config", "tag.gpgsign", "false")
    (root / "podpulse.toml").write_text(PODPULSE_TOML)
    repo.commit("README.md", "# app\n")
    repo.git("add", "podpulse.toml")
    repo.git("commit", "-q", "-m", "deployment file")
    return repo


@pytest.fixture
def podpulse(repo: GitRepo, redis_url: str) -> RunCli:
    """Run ``podpulse <args>`` as a real process in the repository, on the private Redis."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "RUNPOD_"))}
        fixed = {"REDIS_URL": redis_url, "PODPULSE_LOG_FORMAT": "console"}
        done = subprocess.run(
            [PODPULSE, *args], cwd=cwd or repo.root, capture_output=True, text=True,
            env=base | fixed | (env or {}), check=False, timeout=120,
        )  # fmt: skip
        return Ran(done.returncode, done.stdout, done.stderr)

    return run
