"""Worker processes: real runpod SDK workers, started with RunPod's platform environment.

Each runs the twin's worker command (``python -m podpulse.twin.worker`` unless configured
otherwise, e.g. ``python -m podpulse.worker`` for the model).

Each worker gets its own process group, because the runpod SDK forks a heartbeat process
that would outlive a worker killed with SIGKILL; stopping a worker signals the whole group.

A worker is alive while its heartbeat is: one whose pings stop (frozen, wedged, or unable to
reach the twin) is declared dead, its group is killed (SIGKILL ends stopped processes too) and
its jobs fail with the reason. The heartbeat is a child process, though, so it goes on when
only the main process is frozen; a busy worker is dead too when its pings go on while its job
loop (every call but the ping: job-take, job-stop, results, streams, progress) is silent for
the heartbeat timeout. Each worker gets its own token for the worker-facing API, and
none of the twin's own secrets.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from podpulse.common.settings import KNOWN_SECRETS, known_secret_values

__all__ = ["Liveness", "WorkerPool", "WorkerRecord", "WorkerState", "log_tail"]

# Defaults the caller's environment may override: a local worker exports spans only when the
# user points OTEL_* at a collector; otherwise every export would fail against localhost:4318.
_ENV_DEFAULTS = {"OTEL_TRACES_EXPORTER": "none"}


class WorkerState(StrEnum):
    """Where a worker is in its life, as RunPod's /health counts them."""

    INITIALIZING = "initializing"  # spawned (or waiting out the cold-start delay)
    READY = "ready"  # has asked for work at least once
    STOPPING = "stopping"  # told to stop; takes no more jobs


@dataclass(eq=False)
class WorkerRecord:
    """A worker the twin knows: one it spawned, or an external SDK worker that called in."""

    id: str
    state: WorkerState
    spawned_at: float
    process: subprocess.Popen[bytes] | None = None
    start_after: float = 0.0  # monotonic time the process is started (cold-start delay)
    last_seen: float = field(default_factory=time.monotonic)
    last_busy: float = field(default_factory=time.monotonic)
    stop_sent_at: float | None = None
    pending_stops: list[str] = field(default_factory=list)
    log_path: Path | None = None
    pending_env: dict[str, str] | None = None  # set while the cold-start delay runs
    spawned: bool = True  # False for an external SDK worker that called in
    # The bearer token this worker's SDK sends (RUNPOD_AI_API_KEY); good for its own id only.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    process_started: float | None = None  # monotonic time its process was started
    called_in: float | None = None  # its first call of any kind
    last_ping: float | None = None  # its SDK's last heartbeat
    last_loop_call: float | None = None  # its job loop's last call (any but a ping)
    env_revision: int = 0  # the pool's env_revision when its process started


@dataclass(frozen=True)
class Liveness:
    """When a worker counts as dead."""

    # No ping for this long, once it has called in; or, running a job, no call but pings.
    heartbeat_timeout_s: float
    start_timeout_s: float  # no call at all for this long after its process started


class WorkerPool:
    """Starts, tracks and stops worker processes."""

    def __init__(
        self,
        *,
        command: Sequence[str],
        base_env: Mapping[str, str],
        log_dir: Path,
        stop_grace_s: float,
        withheld: Collection[str] = (),
        withheld_values: Collection[str] = (),
    ) -> None:
        self.command = list(command)
        self.base_env = dict(base_env)
        # Environment set while the twin runs (podpulse.twin._worker_env), over base_env; each
        # change bumps env_revision, and a worker started before it is rolled.
        self.env_overrides: dict[str, str] = {}
        self.env_revision = 0
        self._log_dir = log_dir
        # The SDK exits on SIGTERM once its long-polls return, which the platform answers at
        # once; past this grace a worker is killed.
        self._stop_grace_s = stop_grace_s
        # The twin's own secrets (its public API key): kept from workers by name and by value.
        self._withheld = frozenset(withheld)
        self._withheld_values = frozenset(v for v in withheld_values if v)
        self.workers: dict[str, WorkerRecord] = {}
        # Processes killed for missing heartbeats, kept until the kernel has them reaped.
        self._dying: list[subprocess.Popen[bytes]] = []

    def spawn(self, env: Mapping[str, str], *, cold_start_s: float = 0.0) -> WorkerRecord:
        """Register a new worker; its process starts now or after the cold-start delay."""
        worker_id = f"twin-{uuid.uuid4().hex[:12]}"
        now = time.monotonic()
        record = WorkerRecord(
            id=worker_id,
            state=WorkerState.INITIALIZING,
            spawned_at=now,
            start_after=now + cold_start_s,
            log_path=self._log_dir / f"{worker_id}.log",
        )
        self.workers[worker_id] = record
        if cold_start_s <= 0:
            self._start_process(record, env)
        else:
            record.pending_env = dict(env)
        return record

    def start_due(self) -> None:
        """Start processes whose cold-start delay has passed."""
        now = time.monotonic()
        for record in self.workers.values():
            env = record.pending_env
            if env is not None and now >= record.start_after:
                record.pending_env = None
                if record.state is not WorkerState.STOPPING:
                    self._start_process(record, env)

    def kept_out(self) -> tuple[frozenset[str], frozenset[str]]:
        """The variable names and the values no worker may get: every known secret (by name,
        its ``*_FILE`` name and its current value) and the twin's own. Read on each call, as
        a rotated secret's value changes."""
        names = {n for s in KNOWN_SECRETS for n in (s.name, s.file_variable)} | self._withheld
        values = set(known_secret_values()) | self._withheld_values
        return frozenset(names), frozenset(values)

    def _start_process(self, record: WorkerRecord, env: Mapping[str, str]) -> None:
        full_env = {
            **_ENV_DEFAULTS,
            **_inherited_env(*self.kept_out()),
            **self.base_env,
            **self.env_overrides,
            **env,
            "RUNPOD_POD_ID": record.id,
            "RUNPOD_AI_API_KEY": record.token,
        }
        assert record.log_path is not None
        with record.log_path.open("ab") as log:
            # S603: the command is the twin's own setting, run without a shell.
            record.process = subprocess.Popen(  # noqa: S603
                self.command,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record.process_started = time.monotonic()
        record.env_revision = self.env_revision

    def seen(self, worker_id: str, token: str, *, ping: bool = False) -> WorkerRecord:
        """Note a call from a worker; an unknown id is an external SDK worker joining with the
        ``token`` it was given."""
        now = time.monotonic()
        record = self.workers.get(worker_id)
        if record is None:
            record = WorkerRecord(
                id=worker_id, state=WorkerState.READY, spawned_at=now, spawned=False, token=token
            )
            self.workers[worker_id] = record
        record.last_seen = now
        if record.called_in is None:
            record.called_in = now
        if ping:
            record.last_ping = now
        else:
            record.last_loop_call = now
        if record.state is WorkerState.INITIALIZING:
            record.state = WorkerState.READY
        return record

    def stop(self, record: WorkerRecord) -> None:
        """Ask a worker to stop (SIGTERM to its group); it takes no more jobs from now."""
        record.state = WorkerState.STOPPING
        record.stop_sent_at = time.monotonic()
        if record.process is not None and record.process.poll() is None:
            _signal_group(record.process, signal.SIGTERM)

    def reap(
        self, liveness: Liveness, busy_since: Mapping[str, float] | None = None
    ) -> list[tuple[WorkerRecord, str]]:
        """Forget workers that are gone or dead (killing those), each with the reason.

        ``busy_since``: for each worker running a job, when the latest of its jobs was handed
        to it."""
        busy_since = busy_since or {}
        gone: list[tuple[WorkerRecord, str]] = []
        now = time.monotonic()
        self._dying = [proc for proc in self._dying if proc.poll() is None]
        for record in list(self.workers.values()):
            reason = None
            if record.process is not None:
                code = record.process.poll()
                if code is not None:
                    # The heartbeat child may outlive its parent; end the whole group.
                    _signal_group(record.process, signal.SIGKILL)
                    reason = _describe_exit(code)
                elif (
                    reason := _silence(record, liveness, now, busy_since.get(record.id))
                ) is not None:
                    # SIGKILL, not SIGTERM: a frozen (SIGSTOP) process acts on nothing else.
                    _signal_group(record.process, signal.SIGKILL)
                    self._dying.append(record.process)
                elif (
                    record.stop_sent_at is not None
                    and now - record.stop_sent_at > self._stop_grace_s
                ):
                    _signal_group(record.process, signal.SIGKILL)
            elif not record.spawned and now - record.last_seen > liveness.heartbeat_timeout_s:
                # Not ours to kill: it is forgotten, and its jobs fail.
                reason = f"sent no ping or job request for {liveness.heartbeat_timeout_s:g} s"
            elif record.state is WorkerState.STOPPING and record.process is None:
                reason = "stopped before its cold start finished"
            if reason is not None:
                del self.workers[record.id]
                gone.append((record, reason))
        return gone

    def shutdown(self) -> None:
        """Stop every worker: SIGTERM (if not sent yet), the grace, then SIGKILL."""
        procs = [r.process for r in self.workers.values() if r.process is not None]
        procs.extend(self._dying)
        self._dying = []
        for record in self.workers.values():
            if record.stop_sent_at is None:
                self.stop(record)
        deadline = time.monotonic() + self._stop_grace_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.workers.clear()


def _silence(
    record: WorkerRecord, liveness: Liveness, now: float, busy_since: float | None = None
) -> str | None:
    """Why a spawned worker whose process still runs counts as dead, or None while it lives.

    Only pings count once it has called in: a worker whose job loop still takes jobs but
    whose heartbeat never arrives is as lost to the platform as a frozen one. And pings alone
    do not do for a worker running a job (``busy_since``: when its latest job was handed to
    it): they come from the SDK's heartbeat process, which goes on while the main process is
    frozen. A live job loop calls in at least every job-stop hold (Platform.wait_stops keeps
    that well under the timeout); one that has been silent for the timeout while pings kept
    arriving is frozen. Pings that stop as well are the missed heartbeats, named as such.
    """
    timeout_s = liveness.heartbeat_timeout_s
    heard = record.last_ping if record.last_ping is not None else record.called_in
    if heard is not None:
        if now - heard > timeout_s:
            return f"missed heartbeats for {timeout_s:g} s"
        if busy_since is not None and record.last_ping is not None:
            loop_heard = max(busy_since, record.last_loop_call or busy_since)
            if record.last_ping - loop_heard > timeout_s:
                return (
                    f"its job loop was silent for {timeout_s:g} s mid-job while its heartbeat "
                    "went on (its main process is frozen: stopped, deadlocked, or a handler "
                    "blocking its event loop)"
                )
    elif (
        record.process_started is not None
        and now - record.process_started > liveness.start_timeout_s
    ):
        return f"did not call in within {liveness.start_timeout_s:g} s of starting"
    return None


def _inherited_env(names: Collection[str], values: Collection[str]) -> dict[str, str]:
    """The twin's environment less every secret (WorkerPool.kept_out): a worker runs any
    handler it is given, and none of them needs the user's RunPod key, the webhook URLs or the
    twin's own API key (RunPod's own workers get none of them either). A value is dropped
    under any name."""
    return {n: v for n, v in os.environ.items() if n not in names and v not in values}


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def log_tail(path: Path | None, lines: int = 5, limit: int = 4096) -> str:
    """The last ``lines`` non-blank lines of a worker's log (from its last ``limit`` bytes),
    joined with " | ": the cause of a failed start on the twin's console, where the log file's
    path alone hid it."""
    if path is None:
        return ""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - limit))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time or platform signal Python has no name for
            name = f"signal {-code}"
        return f"worker process was killed by {name}"
    return f"worker process exited with code {code}"
