"""The calibrated handler: a stand-in with known timing, errors and crashes.

It does no inference. Execution time is drawn from a configured distribution (or fixed),
a share of jobs fail or kill the worker, and token counts follow a fixed decode speed, so
scaling experiments and tests know exactly what the platform should report. A job's input
may override the draws for one job: ``{"exec_ms": 20, "fail": true, "crash": true,
"output_tokens": 64, "refresh": true, "progress": "started"}`` (refresh: ask RunPod to replace
the worker after it; progress: send that text as a progress update when the job starts, so a
client polling /status knows the worker really has it).
Its settings are :class:`podpulse.twin.settings.CalibratedSettings`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .settings import CalibratedSettings

__all__ = ["CRASH_EXIT_CODE", "make_handler", "make_stream_handler"]

# Exit code of a deliberate crash, so logs tell it from a real one.
CRASH_EXIT_CODE = 17


def _draw_ms(settings: CalibratedSettings, rng: random.Random) -> float:
    mean, jitter = settings.exec_ms, settings.jitter
    match settings.distribution:
        case "fixed":
            return mean
        case "uniform":
            return rng.uniform(mean * (1 - jitter), mean * (1 + jitter))
        case "normal":
            return max(0.0, rng.gauss(mean, mean * jitter))
        case "lognormal":
            # Parametrised so the median is exec_ms: latency tails are right-skewed.
            return rng.lognormvariate(0.0, jitter) * mean
    raise AssertionError(settings.distribution)  # pragma: no cover


def _number(job_input: dict[str, Any], key: str) -> float | None:
    value = job_input.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"input.{key} must be a non-negative number")
    return float(value)


def make_handler(settings: CalibratedSettings) -> Callable[[dict[str, Any]], Any]:
    """An async handler drawing from ``settings``; one random stream per process."""
    rng = random.Random(settings.seed)

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        started = time.time()
        job_input = job.get("input")
        if not isinstance(job_input, dict):
            return {"error": "input must be a JSON object"}
        try:
            exec_ms = _number(job_input, "exec_ms")
            tokens = _number(job_input, "output_tokens")
        except ValueError as exc:
            return {"error": str(exc)}
        progress = job_input.get("progress")
        if progress is not None and not isinstance(progress, str):
            return {"error": "progress must be a string"}
        exec_ms = _draw_ms(settings, rng) if exec_ms is None else exec_ms
        if progress is not None:
            # Late: the SDK is already loaded in a worker; importing it here costs nothing there.
            import runpod

            runpod.serverless.progress_update(job, progress)
        crash = job_input.get("crash") is True or rng.random() < settings.crash_rate
        fail = job_input.get("fail") is True or rng.random() < settings.error_rate
        if crash:
            await asyncio.sleep(exec_ms / 2000)
            # A crash mid-job, as an OOM kill or segfault would end it: no result is sent.
            os._exit(CRASH_EXIT_CODE)
        await asyncio.sleep(exec_ms / 1000)
        if fail:
            return {"error": f"calibrated failure after {exec_ms:.0f} ms"}
        output_tokens = int(
            tokens if tokens is not None else exec_ms / 1000 * settings.tokens_per_second
        )
        finished = time.time()
        refresh = {"refresh_worker": True} if job_input.get("refresh") is True else {}
        return {
            **refresh,
            "text": "calibrated " * min(output_tokens, 16),
            "usage": {"input_tokens": len(str(job_input)) // 4, "output_tokens": output_tokens},
            "timings": {
                "handler_ms": (finished - started) * 1000,
                "started_at": started,
                "finished_at": finished,
                "tokens_per_second": settings.tokens_per_second,
            },
            "model": "calibrated",
        }

    return handler


def make_stream_handler(
    settings: CalibratedSettings,
) -> Callable[[dict[str, Any]], AsyncIterator[Any]]:
    """An async generator handler: ``input.chunks`` partial outputs, ``exec_ms`` apart."""

    async def stream_handler(job: dict[str, Any]) -> AsyncIterator[Any]:
        job_input = job.get("input") or {}
        chunks = int(job_input.get("chunks", 3))
        pause = float(job_input.get("exec_ms", settings.exec_ms)) / 1000
        for index in range(chunks):
            await asyncio.sleep(pause)
            yield {"chunk": index}

    return stream_handler
