"""The process tree under a pid (through psutil), so that nothing a service started outlives it.

A service may start processes outside its own process group (the twin gives each worker its
own group), so signalling the group is not enough. Each process is identified by pid and
start time, so a pid the kernel reused for an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import signal

import psutil

__all__ = ["ProcessId", "alive", "descendants", "kill_all"]

# A process: its pid and its start time (psutil's create_time, seconds since the epoch).
ProcessId = tuple[int, float]

# Whatever psutil raises for a process that is gone, a zombie, or not ours to inspect.
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def descendants(pid: int) -> set[ProcessId]:
    """Every process below *pid* (children, their children, ...), at this moment."""
    found: set[ProcessId] = set()
    with contextlib.suppress(*_GONE):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(*_GONE):
                found.add((child.pid, child.create_time()))
    return found


def alive(process: ProcessId) -> bool:
    """Whether this very process (same pid, same start) still runs; a zombie does not."""
    try:
        running = psutil.Process(process[0])
        return bool(
            running.create_time() == process[1] and running.status() != psutil.STATUS_ZOMBIE
        )
    except _GONE:
        return False


def kill_all(processes: set[ProcessId], sig: signal.Signals = signal.SIGKILL) -> None:
    """Send *sig* to each of *processes* that is still the process it was."""
    for process in processes:
        if alive(process):
            with contextlib.suppress(ProcessLookupError, PermissionError, *_GONE):
                psutil.Process(process[0]).send_signal(sig)
