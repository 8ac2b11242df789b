"""RunPod's public serverless API: /run, /runsync, /status, /stream, /cancel, /retry, ..."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._http import ApiError, check_bearer, parse_count, read_json
from ._jobs import FINAL, Job, JobStatus, Policy
from ._platform import Platform

__all__ = ["cancel_job", "endpoint_platform", "far", "public_routes"]

# RunPod's /runsync waits up to 90 s by default; ?wait= takes 1 s to 5 min in ms.
DEFAULT_SYNC_WAIT_MS = 90_000
SYNC_WAIT_RANGE_MS = (1_000, 300_000)
# /stream holds briefly when nothing new has arrived, so clients need not spin.
STREAM_HOLD_S = 2.0


def endpoint_platform(request: Request) -> Platform:
    """The platform behind an endpoint route, once the key and the endpoint id are checked."""
    platform: Platform = request.app.state.platform
    check_bearer(request, platform.settings.api_key.get_secret_value())
    if request.path_params["endpoint_id"] != platform.settings.endpoint_id:
        raise ApiError(404, f"endpoint {request.path_params['endpoint_id']!r} not found")
    return platform


def _job(platform: Platform, request: Request) -> Job:
    job_id = request.path_params["job_id"]
    job = platform.queue.jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"job {job_id!r} not found (unknown, or past its retention)")
    return job


def _parse_policy(raw: Any) -> Policy:
    if raw is None:
        return Policy()
    if not isinstance(raw, dict):
        raise ApiError(400, "'policy' must be an object")
    fields: dict[str, Any] = {}
    for key, name in (("executionTimeout", "execution_timeout_ms"), ("ttl", "ttl_ms")):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ApiError(400, f"'policy.{key}' must be a positive integer (ms)")
            fields[name] = value
    if "lowPriority" in raw:
        if not isinstance(raw["lowPriority"], bool):
            raise ApiError(400, "'policy.lowPriority' must be true or false")
        fields["low_priority"] = raw["lowPriority"]
    return Policy(**fields)


async def _submit(request: Request, *, sync: bool) -> tuple[Platform, Job]:
    platform = endpoint_platform(request)
    limit = (
        platform.settings.max_runsync_body_bytes if sync else platform.settings.max_run_body_bytes
    )
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object with an 'input' field")
    if body.get("input") is None:
        raise ApiError(400, "missing 'input': the request body must carry an 'input' field")
    webhook = body.get("webhook")
    if webhook is not None and not isinstance(webhook, str):
        raise ApiError(400, "'webhook' must be a URL string")
    policy = _parse_policy(body.get("policy"))
    return platform, platform.queue.submit(body["input"], policy, sync=sync, webhook=webhook)


async def run(request: Request) -> JSONResponse:
    """POST /run: queue a job and answer its id at once."""
    _, job = await _submit(request, sync=False)
    # RunPod answers the acceptance, IN_QUEUE, even when a worker takes the job at once.
    return JSONResponse({"id": job.id, "status": JobStatus.IN_QUEUE.value})


async def runsync(request: Request) -> JSONResponse:
    """POST /runsync: queue a job and wait for it up to ?wait= ms."""
    # The key first: a caller without one learns nothing of the parameters.
    endpoint_platform(request)
    wait_ms = DEFAULT_SYNC_WAIT_MS
    if "wait" in request.query_params:
        low, high = SYNC_WAIT_RANGE_MS
        message = f"'wait' must be an integer between {low} and {high} (ms)"
        try:
            wait_ms = parse_count(request.query_params["wait"], "wait")
        except ApiError:
            raise ApiError(400, message) from None
        if not low <= wait_ms <= high:
            raise ApiError(400, message)
    _, job = await _submit(request, sync=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(job.done.wait(), wait_ms / 1000)
    return JSONResponse(job.to_json())


async def status(request: Request) -> JSONResponse:
    """GET or POST /status/{id}."""
    return JSONResponse(_job(endpoint_platform(request), request).to_json())


async def stream(request: Request) -> JSONResponse:
    """GET /stream/{id}: partial outputs not yet read, holding briefly for new ones."""
    job = _job(endpoint_platform(request), request)
    cursor = job.stream_read
    if cursor >= len(job.stream) and job.status not in FINAL:
        job.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.changed.wait(), STREAM_HOLD_S)
    chunks = job.stream[cursor:]
    job.stream_read = cursor + len(chunks)
    return JSONResponse({"status": job.status.value, "stream": chunks})


def cancel_job(platform: Platform, job: Job) -> None:
    """Cancel ``job``: dropped from the queue, or stopped on its worker (job-stop)."""
    for worker_id in platform.queue.cancel(job):
        platform.request_stop(worker_id, job.id)


async def cancel(request: Request) -> JSONResponse:
    """POST /cancel/{id}: a queued job is dropped; a running one is stopped on its worker."""
    platform = endpoint_platform(request)
    job = _job(platform, request)
    cancel_job(platform, job)
    return JSONResponse({"id": job.id, "status": job.status.value})


async def retry(request: Request) -> JSONResponse:
    """POST /retry/{id}: queue a FAILED or TIMED_OUT job again under its id."""
    platform = endpoint_platform(request)
    job = _job(platform, request)
    if not platform.queue.retry(job):
        raise ApiError(
            400,
            f"job {job.id!r} is {job.status.value}; only FAILED or TIMED_OUT jobs can be retried",
        )
    return JSONResponse({"id": job.id, "status": JobStatus.IN_QUEUE.value})


async def purge_queue(request: Request) -> JSONResponse:
    """POST /purge-queue: drop every queued job; running ones go on."""
    removed = endpoint_platform(request).queue.purge()
    return JSONResponse({"removed": removed, "status": "completed"})


async def health(request: Request) -> JSONResponse:
    """GET /health: job and worker counts."""
    return JSONResponse(endpoint_platform(request).health())


def far(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` a network away: ``api_latency_ms`` passes before the twin reads a request
    and again before its answer (or error) leaves, as between a client and hosted RunPod."""

    async def far_endpoint(request: Request) -> Response:
        latency = request.app.state.platform.settings.api_latency_ms / 1000
        if latency <= 0:
            return await endpoint(request)
        await asyncio.sleep(latency)
        try:
            response = await endpoint(request)
        except ApiError:
            await asyncio.sleep(latency)
            raise
        await asyncio.sleep(latency)
        return response

    return far_endpoint


public_routes = [
    Route("/v2/{endpoint_id}/run", far(run), methods=["POST"]),
    Route("/v2/{endpoint_id}/runsync", far(runsync), methods=["POST"]),
    Route("/v2/{endpoint_id}/status/{job_id}", far(status), methods=["GET", "POST"]),
    Route("/v2/{endpoint_id}/stream/{job_id}", far(stream), methods=["GET", "POST"]),
    Route("/v2/{endpoint_id}/cancel/{job_id}", far(cancel), methods=["POST"]),
    Route("/v2/{endpoint_id}/retry/{job_id}", far(retry), methods=["POST"]),
    Route("/v2/{endpoint_id}/purge-queue", far(purge_queue), methods=["POST"]),
    Route("/v2/{endpoint_id}/health", far(health), methods=["GET"]),
]
