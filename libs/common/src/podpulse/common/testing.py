"""Helpers for podpulse's tests and benchmarks: a real, throwaway Redis on a free loopback
port, and polling for a condition instead of sleeping a fixed time.

Importable by every service's tests (``from podpulse.common.testing import redis_server``);
nothing here is used at run time.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .net import free_port
from .redis_process import find_redis_server, redis_server_argv, wait_for_ping

__all__ = ["free_port", "redis_server", "wait_until"]

T = TypeVar("T")

_START_ATTEMPTS = 3  # free_port() can race another process for the port; a retry settles it


@contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start a private ``redis-server``, yield its URL (db 0), and stop it afterwards.

    No persistence and its own temporary directory, so nothing outlives the block. Raises
    RuntimeError when redis-server is not installed or does not answer PING in *timeout_s*.
    """
    executable = find_redis_server()
    if executable is None:
        raise RuntimeError(
            "redis-server is not on PATH; install Redis (apt install redis-server, "
            "brew install redis) to run tests that need a real broker"
        )
    with tempfile.TemporaryDirectory(prefix="podpulse-redis-") as workdir:
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            port = free_port()
            logfile = Path(workdir) / f"redis-{port}.log"
            process = _spawn(executable, port, Path(workdir), logfile)
            try:
                url = f"redis://127.0.0.1:{port}/0"
                last_error = _wait_for_ping(process, url, timeout_s, logfile)
                if not last_error:
                    yield url
                    return
            finally:
                _stop(process)
        raise RuntimeError(f"redis-server did not start: {last_error}")


def _spawn(executable: str, port: int, workdir: Path, logfile: Path) -> subprocess.Popen[bytes]:
    argv = redis_server_argv(executable, port, workdir, logfile)
    # S603: the argv is an absolute path from shutil.which and values we made; no shell.
    return subprocess.Popen(  # noqa: S603
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_for_ping(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, logfile: Path
) -> str:
    """Empty string once PING answers; otherwise why it never did."""
    return wait_for_ping(url, timeout_s, process=process, logfile=logfile)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(
    check: Callable[[], T | None], timeout_s: float = 30.0, what: str = "", poll_s: float = 0.02
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; TimeoutError naming
    *what* after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what or check}")
        time.sleep(poll_s)
