"""Helpers for podpulse's tests and benchmarks, and the suite's pytest plugin.

Helpers: a real, throwaway Redis on a free loopback port (one that can be restarted, too), and
polling for a condition instead of sleeping a fixed time.

The plugin (loaded for every test by ``-p podpulse.common.testing`` in the root pyproject's
pytest options) holds the Redis fixtures every service's tests share, so no conftest writes
its own: ``redis_url`` (a private redis-server per test file), ``redis_client`` on it, and
``key_prefix`` (a prefix of the test's own, for tests sharing the file's server). It also
chooses how many generated cases the hypothesis suites run: the ``fast`` profile in
``make test``, the full counts under ``deep`` (``make test-deep``, i.e.
``--hypothesis-profile=deep``, or ``PODPULSE_HYPOTHESIS_PROFILE=deep``); a suite asks
:func:`cases` for its count.

Nothing here is used at run time: production code never imports this module.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import settings

from .net import free_port
from .redis_process import find_redis_server, redis_server_argv, wait_for_ping

__all__ = [
    "DEEP",
    "FAST",
    "PROFILE_ENV",
    "RestartableRedis",
    "cases",
    "free_port",
    "key_prefix",
    "redis_client",
    "redis_server",
    "redis_url",
    "sigint_as",
    "stop_process",
    "wait_until",
]

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
            process = _spawn(redis_server_argv(executable, port, Path(workdir), logfile))
            try:
                url = f"redis://127.0.0.1:{port}/0"
                last_error = _wait_for_ping(process, url, timeout_s, logfile)
                if not last_error:
                    yield url
                    return
            finally:
                stop_process(process)
        raise RuntimeError(f"redis-server did not start: {last_error}")


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    # S603: the argv is an absolute path from shutil.which and values we made; no shell.
    return subprocess.Popen(  # noqa: S603
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_for_ping(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, logfile: Path
) -> str:
    """Empty string once PING answers; otherwise why it never did."""
    return wait_for_ping(url, timeout_s, process=process, logfile=logfile)


def sigint_as(disposition: signal.Handlers, argv: list[str]) -> list[str]:
    """``argv`` started with SIGINT set to ``disposition`` (SIG_DFL or SIG_IGN), whatever the
    suite itself was started with: a background job's SIGINT is ignored, and children inherit
    that. A disposition survives exec, so a small launcher sets it and execs ``argv`` in its
    place (same pid); unlike ``preexec_fn``, that is safe in a process with threads."""
    code = (
        f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{disposition.name}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", code, *argv]


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """SIGTERM (a warm shutdown for Celery, a clean one for servers), SIGKILL after *timeout_s*."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RestartableRedis:
    """A redis-server on a fixed loopback port and folder, stopped and started again as a
    restarted Redis (or ``podpulse up`` restarting its own) would be.

    With its append-only file, as ``podpulse up`` runs its Redis, so a restarted server still
    holds its queues; ``persist=False`` for one that comes back empty. :meth:`close` kills
    whatever is still running.
    """

    def __init__(self, folder: Path, *, persist: bool = True) -> None:
        executable = find_redis_server()
        if executable is None:
            raise RuntimeError("redis-server is not on PATH; install Redis")
        port = free_port()
        self.log = folder / "redis.log"
        self.argv = redis_server_argv(executable, port, folder, self.log, persist=persist)
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server; RuntimeError saying why when it does not answer PING."""
        self.process = _spawn(self.argv)
        problem = _wait_for_ping(self.process, self.url, timeout_s, self.log)
        if problem:
            raise RuntimeError(f"redis-server did not start: {problem}")

    def stop(self) -> None:
        """SIGTERM, as a restart sends: Redis writes its append-only file, then exits."""
        assert self.process is not None, "not started"
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop, then start again on the same port and folder."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Kill the server if it is still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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


# --- the pytest plugin: shared Redis fixtures ---------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private redis-server for the test file: its tests share it, other files never see it."""
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the file's Redis, closed after the test."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix of this test's own, so tests sharing a Redis never see each other."""
    return f"t{uuid.uuid4().hex[:8]}:"


# --- the pytest plugin: how many generated cases ------------------------------------------

FAST = "fast"  # `make test`: every property suite, at a tenth of its cases
DEEP = "deep"  # `make test-deep`: the full counts the suites were written for
PROFILE_ENV = "PODPULSE_HYPOTHESIS_PROFILE"
_FAST_SHARE = 10  # the fast profile runs 1/_FAST_SHARE of a suite's full count ...
_FAST_FLOOR = 20  # ... but never fewer cases than this (nor more than the full count)

# hypothesis' own default (100) is the deep count of suites that name none; the fast one runs
# the floor. deadline=None: a case's time on a loaded machine is not a verdict.
settings.register_profile(DEEP, deadline=None)
settings.register_profile(FAST, deadline=None, max_examples=_FAST_FLOOR)
_profile = {"name": FAST}


def cases(full: int) -> int:
    """The number of generated cases a suite written for *full* runs under the loaded profile:
    all of them under ``deep``, a tenth (at least 20, at most *full*) under ``fast``."""
    if _profile["name"] == DEEP:
        return full
    return min(full, max(_FAST_FLOOR, full // _FAST_SHARE))


class _SnapshotLoggerDict(dict[str, Any]):
    """The logging manager's registry, whose ``values()`` is a copy taken at once.

    pytest attaches its capture handler around every test phase by iterating
    ``loggerDict.values()``; a twin or Celery worker thread of the test creating its first
    logger meanwhile made that iteration fail ("dictionary changed size during iteration",
    a failed test in CI). Copying the values is one step the other thread cannot split.
    """

    def values(self) -> list[Any]:  # type: ignore[override]  # a list: a snapshot, not a view
        return list(super().values())


def pytest_configure(config: pytest.Config) -> None:
    """Load the profile named by ``--hypothesis-profile`` or the environment (fast if none);
    make the logging registry safe for pytest to walk while test threads add to it."""
    manager = logging.Logger.manager
    if not isinstance(manager.loggerDict, _SnapshotLoggerDict):
        manager.loggerDict = _SnapshotLoggerDict(manager.loggerDict)
    name = config.getoption("hypothesis_profile", None) or os.environ.get(PROFILE_ENV, FAST)
    if name not in (FAST, DEEP):
        raise pytest.UsageError(f"hypothesis profile {name!r}: podpulse has {FAST!r} and {DEEP!r}")
    _profile["name"] = name
    settings.load_profile(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (modules that start real processes) run first.

    ``make test`` hands out whole files (``--dist loadfile``, in collection order with
    ``--no-loadscope-reorder``): a long file handed out last keeps one test worker busy after
    the others are done, so the long ones go out first and the quick ones fill in the end.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: files stay whole
