"""A small process supervisor: the stack's table, started in order, watched, restarted, stopped.

Single-threaded and polled: :meth:`Supervisor.tick` starts what may start, checks readiness,
notices exits and restarts what is due, and returns at once. Each service runs in its own
session (so its process group is its own: a terminal's Ctrl-C reaches the supervisor alone,
which then stops everything in order), with stdout and stderr appended to
``<log_dir>/<name>.log``. A crashed service is reported and restarted after a back-off
(podpulse.common.retry.Backoff: jittered exponential steps), which starts over once the
service has stayed ready a while. Stopping sends SIGTERM to every group, waits out the grace
for them and every process they started (podpulse.stack._procs), then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx

from podpulse.common.retry import Backoff

from ._procs import ProcessId, alive, descendants, kill_all
from ._readiness import LogCursor, check
from ._spec import Restart, ServiceSpec

__all__ = ["ServiceStatus", "State", "Supervisor", "SupervisorTimings"]

_CHECK_EVERY_S = 0.25
# Walking /proc costs a read per process: often enough to know what a crashed service left.
_TREE_EVERY_S = 2.0
_PR_SET_PDEATHSIG = 1

OnEvent = Callable[[str], None]


class State(StrEnum):
    """Where a service is in its life, as the status view shows it."""

    WAITING = "waiting"  # for the services it comes after
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"  # exited; waiting out its back-off
    EXITED = "exited"  # exited and not restarted (its policy)
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SupervisorTimings:
    """How a supervisor runs its services: readiness, back-off, shutdown."""

    ready_timeout_s: float = 90.0
    stop_grace_s: float = 5.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=1.0, max_s=30.0))
    stable_after_s: float = 60.0


@dataclass(frozen=True)
class ServiceStatus:
    """One service as the status view and status.json show it."""

    name: str
    state: State
    pid: int | None
    restarts: int
    ready_after_s: float | None  # from its latest start to ready
    note: str  # the last exit, or why it is waiting


@dataclass(eq=False)
class _Service:
    spec: ServiceSpec
    log_path: Path
    state: State = State.WAITING
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    checked_at: float = 0.0
    restarts: int = 0
    attempt: int = 0
    restart_at: float = 0.0
    note: str = ""
    cursor: LogCursor | None = None
    tree: set[ProcessId] = field(default_factory=set)
    tree_at: float = 0.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the service gets SIGTERM should the supervisor itself be killed (SIGKILL gives
    # it no chance to stop anything); elsewhere this is a no-op.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Runs *services* (in the table's order, each after those it names in ``after``)."""

    def __init__(
        self,
        services: Sequence[ServiceSpec],
        *,
        log_dir: Path,
        envs: Mapping[str, Mapping[str, str]],
        timings: SupervisorTimings,
        on_event: OnEvent = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [spec.name for spec in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names repeat: {names}")
        for spec in services:
            missing = [dep for dep in spec.after if dep not in names]
            if missing:
                raise ValueError(f"{spec.name} comes after {missing}, which are not running")
        log_dir.mkdir(parents=True, exist_ok=True)
        self._services = [_Service(spec, log_dir / f"{spec.name}.log") for spec in services]
        self._envs = envs
        self._timings = timings
        self._on_event = on_event
        self._clock = clock
        self._http = httpx.Client()
        self._stopping = False

    # --- the loop ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One pass over every service; returns at once."""
        if self._stopping:
            return
        now = self._clock()
        ready = {s.spec.name for s in self._services if s.state is State.READY}
        for service in self._services:
            deps_ready = set(service.spec.after) <= ready
            backed_off = now >= service.restart_at
            if (service.state is State.WAITING and deps_ready) or (
                service.state is State.RESTARTING and backed_off
            ):
                self._spawn(service, now)
            elif service.state in (State.STARTING, State.READY):
                self._watch(service, now)

    def all_ready(self) -> bool:
        """Whether every service is ready at this moment."""
        return all(s.state is State.READY for s in self._services)

    def statuses(self) -> tuple[ServiceStatus, ...]:
        """Every service's state, pid and restarts, in the table's order."""
        return tuple(
            ServiceStatus(
                name=s.spec.name,
                state=s.state,
                pid=s.process.pid if s.process is not None else None,
                restarts=s.restarts,
                ready_after_s=None if s.ready_at is None else s.ready_at - s.started_at,
                note=s.note,
            )
            for s in self._services
        )

    # --- one service ------------------------------------------------------------------------

    def _spawn(self, service: _Service, now: float) -> None:
        spec = service.spec
        service.cursor = LogCursor(service.log_path)
        with service.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- podpulse up: starting {spec.name} at {stamp}\n".encode())
            log.flush()
            try:
                # S603: argv comes from the stack's own table, never from a shell string.
                service.process = subprocess.Popen(  # noqa: S603
                    spec.argv,
                    env=dict(self._envs[spec.name]),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
                )
            except OSError as exc:
                service.process = None
                self._exited(service, now, f"could not start: {exc.strerror or exc}", failed=True)
                return
        service.state = State.STARTING
        service.started_at = service.checked_at = now
        service.ready_at = None
        service.tree, service.tree_at = set(), now
        self._on_event(f"{spec.name} starting (pid {service.process.pid})")

    def _watch(self, service: _Service, now: float) -> None:
        process = service.process
        assert process is not None
        assert service.cursor is not None
        code = process.poll()
        if code is not None:
            self._kill_leftovers(service)
            self._exited(service, now, _describe_exit(code), failed=code != 0)
            return
        if now - service.tree_at >= _TREE_EVERY_S:
            service.tree, service.tree_at = descendants(process.pid), now
        if service.state is State.READY:
            if service.attempt and now - (service.ready_at or now) >= self._timings.stable_after_s:
                service.attempt = 0
            return
        if now - service.checked_at < _CHECK_EVERY_S:
            return
        service.checked_at = now
        if check(service.spec.ready, service.cursor, self._http):
            service.state, service.ready_at, service.note = State.READY, now, ""
            self._on_event(f"{service.spec.name} ready in {now - service.started_at:.1f} s")
        elif now - service.started_at > self._timings.ready_timeout_s:
            self._on_event(
                f"{service.spec.name} not ready after {self._timings.ready_timeout_s:g} s: "
                "stopping it"
            )
            self._terminate([service], self._timings.stop_grace_s)
            self._exited(service, self._clock(), "was not ready in time", failed=True)

    def _exited(self, service: _Service, now: float, why: str, *, failed: bool) -> None:
        policy = service.spec.restart
        if policy is Restart.NEVER or (policy is Restart.ON_FAILURE and not failed):
            service.state, service.note = State.EXITED, why
            self._on_event(f"{service.spec.name} {why}; not restarted ({policy})")
            return
        delay = self._timings.backoff.delay(service.attempt)
        service.attempt += 1
        service.restarts += 1
        service.state, service.restart_at = State.RESTARTING, now + delay
        service.note = why
        self._on_event(f"{service.spec.name} {why}; restart {service.restarts} in {delay:.1f} s")

    def _kill_leftovers(self, service: _Service) -> None:
        """What a dead service's processes left behind: its group and its known tree."""
        assert service.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.process.pid, signal.SIGKILL)
        kill_all(service.tree)
        service.tree = set()

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, *, hurry: Callable[[], bool] = lambda: False) -> None:
        """Stop every service (Redis last) and every process they started; idempotent.

        *hurry* returning True (a second Ctrl-C) cuts the grace short: SIGKILL at once.
        """
        self._stopping = True
        try:
            first = [s for s in self._services if not s.spec.stop_last]
            last = [s for s in self._services if s.spec.stop_last]
            for group in (first, last):
                self._terminate(group, self._timings.stop_grace_s, hurry=hurry)
                for service in group:
                    if service.state is not State.EXITED:
                        service.state = State.STOPPED
        finally:
            self._http.close()

    def _terminate(
        self,
        services: Sequence[_Service],
        grace_s: float,
        *,
        hurry: Callable[[], bool] = lambda: False,
    ) -> None:
        running = [s for s in services if s.process is not None and s.process.poll() is None]
        trees: set[ProcessId] = set()
        for service in running:
            assert service.process is not None
            service.state = State.STOPPING
            # A fresh look: whatever it started since the last walk is stopped too.
            trees |= service.tree | descendants(service.process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGTERM)
        deadline = self._clock() + grace_s
        while self._clock() < deadline and not hurry():
            exited = all(s.process.poll() is not None for s in running if s.process is not None)
            if exited and not any(alive(p) for p in trees):
                break
            time.sleep(0.05)
        for service in running:
            assert service.process is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGKILL)
        kill_all(trees)
        for service in running:
            assert service.process is not None
            service.process.wait()
            self._on_event(f"{service.spec.name} stopped")
        for service in services:
            service.tree = set()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"
