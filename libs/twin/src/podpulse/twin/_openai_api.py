"""RunPod's OpenAI-compatible route: ``{base}/{endpoint_id}/openai/v1/chat/completions``
and ``/models``, answered by the endpoint's workers.

As on RunPod, a request becomes a job on the endpoint's queue (so delayTime, scaling and
workers behave as for /run) whose input is ``{"openai_route": "/v1/...", "openai_input":
<request body or null>}``; the worker yields the answer (issue 21's contract, section 2).
A streamed chat completion is relayed as ``text/event-stream``, each string the worker streams
written the moment it arrives; anything else is the worker's last output, as JSON. Errors are
OpenAI's schema (``{"error": {"message", "type", "param", "code"}}``), never RunPod's, since
the clients here are OpenAI clients.

The response starts once the job's first chunk is in (or the job ended), so a request the
worker refuses is still a 400 and not a stream holding an error. A client that leaves before
its answer cancels the job, stopping it on its worker as /cancel does: nobody can read it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._http import ApiError, read_json
from ._jobs import FINAL, Job, JobStatus, Policy
from ._platform import Platform
from ._public_api import cancel_job, endpoint_platform, far
from .calibrated import CHAT_ROUTE, MODELS_ROUTE, openai_error

__all__ = ["openai_routes"]

_DONE = "data: [DONE]"
# A worker's error text longer than this is not read back as an OpenAI error object.
_MAX_ERROR_CHARS = 64 * 1024


def _error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    close: bool = False,
) -> JSONResponse:
    """OpenAI's error body (see openai_error), as a response."""
    body = openai_error(message, param, kind=kind, code=code)
    headers = {"Connection": "close"} if close else None
    return JSONResponse(body, status_code=status, headers=headers)


def _refused(exc: ApiError) -> JSONResponse:
    code = "invalid_api_key" if exc.status == 401 else None
    return _error(exc.status, exc.message, code=code, close=exc.close)


def _worker_error(text: str | None) -> dict[str, Any] | None:
    """The OpenAI error object a FAILED job's error holds, if it holds one.

    A generator handler yielding ``{"error": {...}}`` fails its job in the runpod SDK (1.12),
    which sends the object as ``str()`` of it, a Python repr; a worker may also send JSON.
    """
    if not text or len(text) > _MAX_ERROR_CHARS:
        return None
    for read in (json.loads, ast.literal_eval):
        with contextlib.suppress(ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = read(text)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return {k: value.get(k) for k in ("message", "type", "param", "code")}
    return None


def _failure(job: Job) -> dict[str, Any]:
    """What a job that ended without an answer is reported as, in OpenAI's error shape."""
    if job.status is JobStatus.FAILED and (given := _worker_error(job.error)) is not None:
        return given
    reason = job.error or f"the job ended {job.status.value}"
    return {"message": reason, "type": "server_error", "param": None, "code": None}


def _answer(job: Job) -> Response:
    """A finished job as the route's JSON answer: its last output, or its error."""
    if job.status is not JobStatus.COMPLETED:
        error = _failure(job)
        return JSONResponse({"error": error}, status_code=500 if _is_server(error) else 400)
    # return_aggregate_stream makes the output the list of everything the worker yielded.
    output = job.output[-1] if isinstance(job.output, list) and job.output else job.output
    if not isinstance(output, dict):
        return _error(500, "the worker's answer is not a JSON object", kind="server_error")
    if isinstance(output.get("error"), dict):
        return JSONResponse({"error": output["error"]}, status_code=400)
    return JSONResponse(output)


def _is_server(error: dict[str, Any]) -> bool:
    return error.get("type") == "server_error"


def _event_text(output: Any) -> str:
    # The contract is strings of whole SSE events; anything else is sent as one event.
    if isinstance(output, str):
        return output
    return f"data: {json.dumps(output, separators=(',', ':'))}\n\n"


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (the body is read, so nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _wait(job: Job, ready: Callable[[], bool], request: Request, timeout_s: float) -> str:
    """Wait until ``ready()``: "ready", or "gone" (the client left) or "late" (timeout_s)."""
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        async with asyncio.timeout(timeout_s):
            while not ready():
                job.changed.clear()
                changed = asyncio.ensure_future(job.changed.wait())
                try:
                    await asyncio.wait({gone, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                if gone.done():
                    return "gone"
    except TimeoutError:
        return "late"
    finally:
        gone.cancel()
    return "ready"


class _Relay:
    """A job's streamed strings as they arrive, each ``latency_s`` after it reached the twin
    (the network's one way), until the job ends; an error event and [DONE] when the worker
    sent no [DONE]. ``answered``: [DONE] went out, so the client has its whole answer."""

    def __init__(self, job: Job, latency_s: float, clock: Callable[[], float]) -> None:
        self.job, self.latency_s, self.clock = job, latency_s, clock
        self.answered = False

    async def __aiter__(self) -> AsyncIterator[str]:
        job, cursor = self.job, 0
        while True:
            if cursor < len(job.stream):
                text = _event_text(job.stream[cursor].get("output"))
                if self.latency_s > 0:
                    await asyncio.sleep(job.stream_at[cursor] + self.latency_s - self.clock())
                cursor += 1
                self.answered = self.answered or _DONE in text
                yield text
            elif job.status in FINAL:
                break
            else:
                job.changed.clear()
                await job.changed.wait()
        if not self.answered:
            error = _failure(job) if job.status is not JobStatus.COMPLETED else {
                "message": "the worker's stream ended without data: [DONE]",
                "type": "server_error", "param": None, "code": None}  # fmt: skip
            yield f"data: {json.dumps({'error': error})}\n\n{_DONE}\n\n"


class _EventStream(StreamingResponse):
    """A server-sent-event stream that runs ``on_end`` however it ends (finished, client
    gone, or failed), so a job no client can read any more is not left running."""

    def __init__(self, chunks: AsyncIterator[str], on_end: Callable[[], None]) -> None:
        # no-cache and no proxy buffering: each event must reach the client as it is written.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(chunks, media_type="text/event-stream", headers=headers)
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()


async def _read(request: Request, route: str) -> tuple[Platform, dict[str, Any] | None]:
    """The platform, once the key is checked, and a chat request's body, bounded as /runsync's."""
    platform = endpoint_platform(request)
    if route != CHAT_ROUTE:
        return platform, None
    body = await read_json(request, platform.settings.max_runsync_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object (a chat completion)")
    return platform, body


async def _serve(request: Request, route: str) -> Response:
    try:
        platform, body = await _read(request, route)
    except ApiError as exc:
        return _refused(exc)
    job = platform.queue.submit({"openai_route": route, "openai_input": body}, Policy(), sync=True)
    streaming = body is not None and body.get("stream") is True

    def ready() -> bool:
        return job.status in FINAL or (streaming and bool(job.stream))

    outcome = await _wait(job, ready, request, platform.settings.openai_wait_s)
    if outcome != "ready":
        cancel_job(platform, job)
        if outcome == "gone":
            return Response(status_code=499)  # nobody reads it; the access log shows why
        return _error(
            504,
            f"no answer within {platform.settings.openai_wait_s:g} s (TWIN_OPENAI_WAIT_S); "
            "the job was cancelled",
            kind="server_error",
            code="timeout",
        )
    if not job.stream or not streaming:
        return _answer(job)
    relay = _Relay(job, platform.settings.api_latency_ms / 1000, platform.queue.clock)

    def abandoned() -> None:
        # A client that leaves once it has [DONE] (before the job's result is in) left
        # nothing unread: that job completes.
        if job.status not in FINAL and not relay.answered:
            cancel_job(platform, job)

    return _EventStream(aiter(relay), abandoned)


async def chat_completions(request: Request) -> Response:
    """POST /v2/{id}/openai/v1/chat/completions: a chat completion, streamed or whole."""
    return await _serve(request, CHAT_ROUTE)


async def models(request: Request) -> Response:
    """GET /v2/{id}/openai/v1/models: the models the endpoint's worker serves."""
    return await _serve(request, MODELS_ROUTE)


openai_routes = [
    Route("/v2/{endpoint_id}/openai/v1/chat/completions", far(chat_completions), methods=["POST"]),
    Route("/v2/{endpoint_id}/openai/v1/models", far(models), methods=["GET"]),
]
