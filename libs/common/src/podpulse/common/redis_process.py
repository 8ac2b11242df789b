"""How podpulse starts a ``redis-server`` of its own: the command line, and waiting for PING.

Shared by ``podpulse up`` (which starts one when no Redis answers) and the tests' throwaway
servers (podpulse.common.testing), so both run Redis the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["find_redis_server", "redis_server_argv", "wait_for_ping"]


def find_redis_server() -> str | None:
    """The path of ``redis-server`` on PATH, or None when Redis is not installed."""
    return shutil.which("redis-server")


def redis_server_argv(
    executable: str, port: int, workdir: Path, logfile: Path | None, *, persist: bool = False
) -> list[str]:
    """A loopback-only ``redis-server`` on *port*, its files in *workdir*.

    ``noeviction``: a broker that silently drops queued tasks or the beat lock is worse than
    one that refuses writes when full. *persist* keeps an append-only file in *workdir*, so a
    restarted server still holds its queues; without it nothing outlives the process.
    *logfile* None logs to stdout, for a supervisor that captures it.
    """
    argv = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--appendonly", "yes" if persist else "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    if logfile is not None:
        argv += ["--logfile", str(logfile)]
    return argv


def wait_for_ping(
    url: str,
    timeout_s: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    logfile: Path | None = None,
) -> str:
    """Empty string once *url* answers PING within *timeout_s*; otherwise why it never did.

    With *process*, its exit ends the wait early, quoting the tail of *logfile*.
    """
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                log = ""
                if logfile is not None and logfile.exists():
                    log = logfile.read_text(errors="replace")
                return f"exited with {process.returncode}: {log.strip()[-500:]}"
            try:
                if client.ping():
                    return ""
            except redis.RedisError:
                time.sleep(0.05)
        return f"no PING reply from {url} within {timeout_s} s"
    finally:
        client.close()
