"""The worker-facing API of RunPod serverless, as runpod 1.12 SDK workers call it.

job-take and job-stop are long-polls held until there is something to answer; job-done
bodies arrive form-encoded but hold JSON (the SDK's ``_transmit``), so they are parsed as
JSON whatever the content type says.
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._http import ApiError, check_bearer, parse_count, read_body
from ._platform import Platform

__all__ = ["worker_routes"]

# Generous on purpose: the twin should never be the reason a worker's result is lost.
MAX_RESULT_BYTES = 64 * 1024 * 1024


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    # Each worker's own token, for its own id only: the public API key opens none of these
    # routes, and one worker cannot take, finish or ping as another.
    token = platform.worker_token(request.path_params["worker_id"])
    if token is None:
        raise ApiError(401, "Unauthorized: missing or invalid API key")
    check_bearer(request, token)
    if request.path_params["endpoint_id"] != platform.settings.endpoint_id:
        raise ApiError(404, f"endpoint {request.path_params['endpoint_id']!r} not found")
    return platform


async def _take(request: Request, *, batch: bool) -> Response:
    platform = _platform(request)
    record = platform.worker_seen(request.path_params["worker_id"])
    if record.state == "stopping" or platform.closing:
        return Response(status_code=204)
    if platform.is_stale(record):
        await platform.hold_stale(record)
        return Response(status_code=204)
    count = 1
    if batch:
        count = parse_count(request.query_params.get("batch_size", "1"), "batch_size")
        if count < 1:
            raise ApiError(400, "'batch_size' must be a positive integer")
    jobs = await platform.queue.take(record.id, count, platform.settings.take_hold_s)
    if not jobs:
        return Response(status_code=204)
    if await request.is_disconnected():
        # The worker gave up on this poll (or died) while it was parked: the jobs never
        # reached it, so they go back to the head of the queue instead of timing out there.
        platform.queue.requeue(jobs)
        return Response(status_code=204)
    if platform.settings.dispatch_ms > 0:
        # Simulated platform routing latency, counted from when the job was queued and the
        # worker free, so it overlaps the SDK's pause before asking again. RunPod counts its
        # own routing as queue time: the take is re-stamped after the wait.
        await asyncio.sleep(
            platform.queue.routing_left_s(jobs, platform.settings.dispatch_ms / 1000)
        )
        platform.queue.restamp_start(jobs)
    try:
        return JSONResponse([job.for_worker() for job in jobs] if batch else jobs[0].for_worker())
    except (ValueError, TypeError) as exc:
        # Submission refuses what JSON cannot carry, so this is a bug if it happens; the jobs
        # end now with the reason instead of sitting IN_PROGRESS until their timeout.
        for job in jobs:
            platform.queue.fail(job, f"the job could not be sent to a worker: {exc}")
        return Response(status_code=204)


async def job_take(request: Request) -> Response:
    """GET /job-take/{worker}: one job, or 204 after the hold."""
    return await _take(request, batch=False)


async def job_take_batch(request: Request) -> Response:
    """GET /job-take-batch/{worker}?batch_size=N: up to N jobs as a list."""
    return await _take(request, batch=True)


async def _result_body(request: Request) -> dict[str, object]:
    body = await read_body(request, MAX_RESULT_BYTES)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"result body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "result body must be a JSON object")
    return data


async def job_done(request: Request) -> Response:
    """POST /job-done/{worker}/{job}: the final result (``output`` or ``error``), or a
    progress update (``{"status": "IN_PROGRESS", "output": ...}``, the SDK's
    ``progress_update``), which the job shows on /status while it keeps running."""
    platform = _platform(request)
    platform.worker_seen(request.path_params["worker_id"])
    data = await _result_body(request)
    # Results for jobs already cancelled, timed out, forgotten or another worker's are
    # accepted and dropped, so the SDK does not retry them.
    job = platform.queue.jobs.get(request.path_params["job_id"])
    if job is not None and job.worker_id != request.path_params["worker_id"]:
        job = None
    if data.get("status") == "IN_PROGRESS":
        if job is not None:
            platform.queue.progress(job, data.get("output"))
        return JSONResponse({})
    if job is not None:
        error = data.get("error")
        output = data.get("output")
        if request.query_params.get("isStream") == "true" and not output and job.stream:
            output = [chunk.get("output") for chunk in job.stream]
        platform.queue.complete(job, output, None if error is None else str(error))
    if data.get("stopPod"):
        # refresh_worker: RunPod replaces the worker after this job; so does the twin.
        record = platform.pool.workers.get(request.path_params["worker_id"])
        if record is not None:
            platform.stop_worker(record, "refresh_worker requested by the handler")
    return JSONResponse({})


async def job_stream(request: Request) -> Response:
    """POST /job-stream/{worker}/{job}: one partial output of a generator handler."""
    platform = _platform(request)
    platform.worker_seen(request.path_params["worker_id"])
    data = await _result_body(request)
    job = platform.queue.jobs.get(request.path_params["job_id"])
    if job is not None and job.worker_id == request.path_params["worker_id"]:
        platform.queue.add_stream(job, [{"output": data.get("output")}])
    return JSONResponse({})


async def job_stop(request: Request) -> Response:
    """GET /job-stop/{worker}: long-poll answering ``{"jobsToStop": [...]}``."""
    platform = _platform(request)
    worker_id = request.path_params["worker_id"]
    platform.worker_seen(worker_id)
    stops = await platform.wait_stops(worker_id)
    if not stops:
        return Response(status_code=204)
    return JSONResponse({"jobsToStop": stops})


async def ping(request: Request) -> Response:
    """GET /ping/{worker}: the SDK's heartbeat, listing the jobs the worker is running."""
    platform = _platform(request)
    worker_id = request.path_params["worker_id"]
    platform.worker_seen(worker_id, ping=True)
    running = request.query_params.get("job_id") or ""
    platform.reconcile(worker_id, [job_id for job_id in running.split(",") if job_id])
    return JSONResponse({})


worker_routes = [
    Route("/v2/{endpoint_id}/job-take/{worker_id}", job_take, methods=["GET"]),
    Route("/v2/{endpoint_id}/job-take-batch/{worker_id}", job_take_batch, methods=["GET"]),
    Route("/v2/{endpoint_id}/job-done/{worker_id}/{job_id}", job_done, methods=["POST"]),
    Route("/v2/{endpoint_id}/job-stream/{worker_id}/{job_id}", job_stream, methods=["POST"]),
    Route("/v2/{endpoint_id}/job-stop/{worker_id}", job_stop, methods=["GET"]),
    Route("/v2/{endpoint_id}/ping/{worker_id}", ping, methods=["GET"]),
]
