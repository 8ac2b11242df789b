"""The process tree under a pid, read from /proc, so that nothing a service started outlives it.

A service may start processes outside its own process group (the twin gives each worker its
own group), so signalling the group is not enough. Each process is identified by pid and
start time, so a pid the kernel reused for an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["ProcessId", "alive", "descendants", "kill_all"]

_PROC = Path("/proc")
# A process: its pid and its start time in clock ticks since boot (/proc/<pid>/stat field 22).
ProcessId = tuple[int, int]


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) of *pid*, or None when it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(pid: int) -> set[ProcessId]:
    """Every process below *pid* (children, their children, ...), at this moment."""
    children: dict[int, list[ProcessId]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: set[ProcessId] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def alive(process: ProcessId) -> bool:
    """Whether this very process (same pid, same start) still runs; a zombie does not."""
    stat = _stat(process[0])
    return stat is not None and stat[1] == process[1] and stat[2] != "Z"


def kill_all(processes: set[ProcessId], sig: signal.Signals = signal.SIGKILL) -> None:
    """Send *sig* to each of *processes* that is still the process it was."""
    for process in processes:
        if alive(process):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process[0], sig)
