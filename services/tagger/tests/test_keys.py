"""podpulse keys rotate against a real twin: verified before the swap, swapped by rename, and
picked up by a process that is already running, without a restart."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from pydantic import SecretStr

from podpulse.common.testing import free_port, wait_until
from podpulse.tagger.endpoint._keys import KeyFileError, read_key_file, swap_key_file
from podpulse.twin import RunningTwin, TwinSettings, running_twin

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
OLD = "rpa_OLDKEYCANARY" + "0" * 28
NEW = "rpa_NEWKEYCANARY" + "1" * 28

# A long-running podpulse-style process: it asks the twin's /health with RUNPOD_API_KEY (read
# through podpulse's Secret, as every service does) every 50 ms and says what it got.
WATCHER = """
import asyncio, sys
from podpulse.common.runpod import RunPodAuthError, RunPodClient
from podpulse.common.settings import RUNPOD_API_KEY

async def main(base_url, endpoint_id):
    async with RunPodClient(endpoint_id, RUNPOD_API_KEY.require, base_url=base_url) as rp:
        while True:
            try:
                await rp.health()
                print("ok", flush=True)
            except RunPodAuthError:
                print("auth", flush=True)
            await asyncio.sleep(0.05)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(scope="module")
def twin() -> Iterator[RunningTwin]:
    """A twin (no workers) that accepts only the NEW key."""
    settings = TwinSettings(workers_min=0, workers_max=1, api_key=SecretStr(NEW), stop_grace_s=0.3)
    with running_twin(settings, wait_ready=False) as running:
        yield running


@pytest.fixture
def env(twin: RunningTwin, tmp_path: Path) -> dict[str, str]:
    """The environment of a podpulse process whose key file holds the OLD key."""
    key_file = tmp_path / "secrets" / "runpod_api_key"
    key_file.parent.mkdir()
    key_file.write_text(OLD + "\n")
    key_file.chmod(0o600)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "TAGGER_"))}
    return {
        **clean,
        "RUNPOD_API_KEY_FILE": str(key_file),
        "RUNPOD_ENDPOINT_ID": twin.endpoint_id,
        "RUNPOD_ENDPOINT_BASE_URL": twin.base_url,
        "RUNPOD_MANAGEMENT_BASE_URL": twin.base_url,
        "TAGGER_ENDPOINT_HISTORY_FILE": str(tmp_path / "history.jsonl"),
    }


def _rotate(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PODPULSE, "keys", "rotate", *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def _new_key_file(tmp_path: Path, text: str, name: str = "new_key.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class Lines:
    """Collects a process's stdout lines on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        assert process.stdout is not None
        stream = process.stdout
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line.strip()))

    def first(self, word: str, after: float = 0.0) -> float | None:
        return next((t for t, line in list(self.lines) if line == word and t >= after), None)


def test_rotation_reaches_a_running_process_without_a_restart(
    twin: RunningTwin,
    env: dict[str, str],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """A process refused with the old key gets through with the new one once rotate has
    swapped the file: same pid, no restart; the file keeps its 0600 mode."""
    key_file = Path(env["RUNPOD_API_KEY_FILE"])
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, twin.base_url, twin.endpoint_id],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines = Lines(watcher)
    try:
        wait_until(lambda: lines.first("auth"), 60, "the watcher refused with the old key")
        done = _rotate(env, tmp_path, "--new-key-file", str(_new_key_file(tmp_path, NEW + "\n")))
        rotated_at = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert key_file.read_text() == NEW + "\n"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        seen = wait_until(lambda: lines.first("ok", rotated_at), 30, "the watcher on the new key")
        assert watcher.poll() is None
        record_property("new_key_in_use_after_s", round(seen - rotated_at, 3))
        assert NEW not in done.stdout + done.stderr
        assert OLD not in done.stdout + done.stderr
    finally:
        watcher.terminate()
        watcher.wait(10)
        lines.thread.join(10)
        assert watcher.stdout is not None
        watcher.stdout.close()


def test_a_rejected_key_leaves_the_key_file_alone(env: dict[str, str], tmp_path: Path) -> None:
    """A new key the API refuses exits 1 naming the API; the old file (same inode) stays."""
    key_file = Path(env["RUNPOD_API_KEY_FILE"])
    before = key_file.stat().st_ino
    wrong = "rpa_WRONGKEYCANARY" + "2" * 26
    done = _rotate(env, tmp_path, "--new-key-file", str(_new_key_file(tmp_path, wrong)))
    assert done.returncode == 1, done.stderr
    assert "job API" in done.stderr
    assert "refused the new key" in done.stderr
    assert wrong not in done.stdout + done.stderr
    assert (key_file.read_text(), key_file.stat().st_ino) == (OLD + "\n", before)
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["runpod_api_key"]


def test_an_unreachable_api_leaves_the_key_file_alone(env: dict[str, str], tmp_path: Path) -> None:
    """When the key cannot be verified (nothing listening) rotate exits 3 and swaps nothing."""
    dead = f"http://127.0.0.1:{free_port()}/v2"
    env = {**env, "RUNPOD_ENDPOINT_BASE_URL": dead, "RUNPOD_MANAGEMENT_BASE_URL": dead}
    done = _rotate(env, tmp_path, "--new-key-file", str(_new_key_file(tmp_path, NEW)))
    assert done.returncode == 3, done.stderr
    assert "could not be verified" in done.stderr
    assert Path(env["RUNPOD_API_KEY_FILE"]).read_text() == OLD + "\n"


def _bad_cases(tmp_path: Path, env: dict[str, str]) -> list[tuple[list[str], dict[str, str], str]]:
    def given(text: str, name: str) -> list[str]:
        return ["--new-key-file", str(_new_key_file(tmp_path, text, name))]

    return [
        (["--new-key-file", str(tmp_path / "absent")], {}, "absent: no such file"),
        (given("  \n", "empty"), {}, "is empty"),
        (given(f"{NEW} {NEW}", "spaced"), {}, "expected exactly one key"),
        (given(f"{NEW}\n{NEW}\n", "two"), {}, "expected exactly one key"),
        (given(OLD, "same"), {}, "holds the key already in"),
        # Read within a bound: /dev/zero never ends, and is refused after 4 KiB.
        (["--new-key-file", "/dev/zero"], {}, "/dev/zero: holds more than 4096 bytes"),
        (given(NEW, "env"), {"RUNPOD_API_KEY": OLD}, "RUNPOD_API_KEY is set in the environment"),
        (given(NEW, "nofile"), {"RUNPOD_API_KEY_FILE": ""}, "which key file?"),
        ([], {}, "Missing option '--new-key-file'"),
    ]  # fmt: skip


def test_bad_input_is_refused_in_one_line_without_the_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Each bad key file or setting exits 2 with one line; no key is echoed, nothing swapped."""
    for args, extra, expected in _bad_cases(tmp_path, env):
        done = _rotate({**env, **extra}, tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        if args:  # typer's own usage error for a missing option is its boxed message
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert NEW not in done.stderr + done.stdout
        assert OLD not in done.stderr + done.stdout
        assert Path(env["RUNPOD_API_KEY_FILE"]).read_text() == OLD + "\n"


def test_a_key_file_symlink_loop_is_refused_before_any_api_is_called(
    env: dict[str, str], tmp_path: Path
) -> None:
    """RUNPOD_API_KEY_FILE in a symlink loop: exit 2 naming the loop, before the new key goes
    anywhere (the APIs here are unreachable, which would exit 3 had they been tried)."""
    loop_a, loop_b = tmp_path / "loop-a", tmp_path / "loop-b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    dead = f"http://127.0.0.1:{free_port()}/v2"
    env = {**env, "RUNPOD_API_KEY_FILE": str(loop_a), "RUNPOD_ENDPOINT_BASE_URL": dead,
           "RUNPOD_MANAGEMENT_BASE_URL": dead}  # fmt: skip
    done = _rotate(env, tmp_path, "--new-key-file", str(_new_key_file(tmp_path, NEW)))
    assert done.returncode == 2, done.stderr
    assert f"{loop_a}: a symlink loop" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert loop_a.is_symlink()
    assert loop_b.is_symlink()


def test_swap_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    """A key file that is a symlink keeps being a link; the file it points at is replaced."""
    real = tmp_path / "real_key"
    real.write_text(OLD)
    real.chmod(0o640)
    link = tmp_path / "key"
    link.symlink_to(real)
    assert swap_key_file(link, NEW) == real
    assert link.is_symlink()
    assert read_key_file(link) == NEW
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_a_failed_swap_leaves_no_temporary_file(tmp_path: Path) -> None:
    """When the rename fails (here: the path is a folder) no partial file is left behind."""
    folder = tmp_path / "secrets"
    (folder / "key").mkdir(parents=True)
    with pytest.raises(KeyFileError, match="cannot be replaced"):
        swap_key_file(folder / "key", NEW)
    assert [p.name for p in folder.iterdir()] == ["key"]
    assert (folder / "key").is_dir()
