"""MODULE:FUNC handlers for tests, in a worker whose fast job loop never wakes on its clock: the
calibrated handler (fixed 50 ms), and one that returns only when two jobs run at once.

Importing it (the worker does, before its job loop starts) moves the fast loop's fallback
wake-up from a second to a day, so everything that worker does between jobs (take the next
one, start it) must be woken by an event: a slot freed, a job queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

from podpulse.common import runpod_worker
from podpulse.twin import CalibratedSettings
from podpulse.twin.calibrated import make_handler

runpod_worker.FALLBACK_WAKE_S = 86400.0

handler = make_handler(CalibratedSettings(exec_ms=50, distribution="fixed"))


# Two jobs meet here: each waits until another job of this worker has arrived too.
_pair = asyncio.Barrier(2)


async def pair(job: dict[str, Any]) -> dict[str, Any]:
    """Return once a second job is running in this worker at the same time; an error after
    30 s alone (the worker never ran two at once)."""
    del job
    try:
        await asyncio.wait_for(_pair.wait(), 30)
    except TimeoutError:
        return {"error": "no second job ran beside this one"}
    return {"paired": True}
