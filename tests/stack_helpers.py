"""Helpers for the stack's end-to-end tests: a recording HTTP receiver, the process tree of a
stack, and a temporary git repository holding a deployment file."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from podpulse.stack._procs import descendants, kill_all

__all__ = ["Receiver", "deployment_repo", "git", "kill_stack", "pid_alive", "receiver"]


class Receiver:
    """JSON bodies POSTed to one loopback port, in arrival order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._bodies: list[Any] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The URL to give as a webhook."""
        return f"http://127.0.0.1:{self.port}/hook"

    def add(self, body: Any) -> None:
        """Record one delivery."""
        with self._lock:
            self._bodies.append(body)

    def bodies(self) -> list[Any]:
        """Every body so far."""
        with self._lock:
            return list(self._bodies)


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    """A threaded HTTP server on a free loopback port that records JSON POSTs and answers 200,
    as Slack's incoming webhooks and a webhook receiver do."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(size)
            try:
                got.add(json.loads(body))
                self.send_response(200)
            except ValueError:
                self.send_response(400)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got = Receiver(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def pid_alive(pid: int) -> bool:
    """Whether some process runs as *pid* (a zombie does not); for a pid a status view gave."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_stack(process: subprocess.Popen[str]) -> None:
    """After a test: SIGKILL a stack still running and every process it started, then close
    its output."""
    assert process.stdout is not None
    if process.poll() is None:
        children = descendants(process.pid)
        process.kill()
        process.wait()
        kill_all(children)
    process.stdout.close()


def git(repo: Path, *args: str) -> str:
    """A git command's output in *repo*; CalledProcessError when it fails."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def deployment_repo(root: Path, endpoint_id: str) -> Path:
    """A git repository with one commit: a podpulse.toml naming *endpoint_id*."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "e2e@podpulse.invalid")
    git(root, "config", "user.name", "podpulse e2e")
    (root / "podpulse.toml").write_text(
        f"""\
[endpoint]
id = "{endpoint_id}"
image = "podpulse/worker:e2e"
model = "Puneetrinity/qwen2-7b-career"
model_size_gb = 22.69
gpu = "NVIDIA GeForce RTX 4090"

[endpoint.workers]
min = 1
max = 1
idle_timeout_s = 180

[endpoint.scaling]
type = "QUEUE_DELAY"
value = 1
"""
    )
    git(root, "add", "podpulse.toml")
    git(root, "commit", "-q", "-m", "the deployment")
    return root
