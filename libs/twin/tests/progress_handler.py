"""A MODULE:FUNC handler for tests: reports progress, waits to be released, then returns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """Send progress "25%", hold until ``input.release`` (a path) exists, return "done"."""
    runpod.serverless.progress_update(job, "25%")
    release = Path(job["input"]["release"])
    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(release.exists) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return {"result": "done"}
