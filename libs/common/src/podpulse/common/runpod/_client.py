"""``RunPodClient``: the serverless endpoint's public job API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from podpulse.common.settings import DEFAULT_RUNPOD_ENDPOINT_BASE_URL as DEFAULT_BASE_URL

from ..retry import Backoff
from ._errors import RunPodProtocolError
from ._http import ApiKey, HttpClientBase, ModelT, Requester, parse_model
from ._models import Health, Job, JobPolicy, PurgeResult, StreamResult
from ._sse import sse_data

# How long RunPod holds a /runsync open when no ?wait= is given.
DEFAULT_RUNSYNC_WAIT_MS = 90_000


def path_segment(value: str, what: str) -> str:
    """Quote an id for use in a URL path, refusing empty ids and path tricks."""
    if not value or not value.strip() or value in (".", ".."):
        raise ValueError(f"{what} must be a non-empty id, got {value!r}")
    return quote(value, safe="")


class RunPodClient(HttpClientBase):
    """Async client for one RunPod serverless endpoint (hosted, or the local twin).

    Retry rules (``max_retries`` extra attempts, waits shaped by ``backoff``):

    * 429 is retried for every call: a rate-limited request was not accepted.
    * A failed connect is retried for every call: nothing reached the server.
    * 5xx and dropped connections are retried only where repeating is harmless:
      ``status``, ``stream``, ``health`` (reads), ``cancel`` (cancelling twice is the same
      as once) and ``purge_queue`` (a second purge finds the queue already empty, so its
      ``removed`` may undercount).
    * ``run`` and ``runsync`` are NOT retried on 5xx or a dropped connection: the server
      may already have queued the job, and resubmitting would run the input twice (double
      GPU cost, duplicate side effects, skewed probe statistics). ``retry`` is treated the
      same way because it requeues work. The ``RunPodServerError`` says so.
    * Read/write timeouts are never retried; they raise ``RunPodTimeout``.

    ``api_key`` may be a callable; it is called before every request, so a rotated key is
    picked up without rebuilding the client. Pass ``client`` to share a connection pool
    (this client then does not close it); ``timeout`` applies to every request either way.
    """

    def __init__(
        self,
        endpoint_id: str,
        api_key: ApiKey,
        *,
        base_url: str = DEFAULT_BASE_URL,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.base_url = base_url.rstrip("/")
        self._url = f"{self.base_url}/{path_segment(endpoint_id, 'endpoint_id')}"
        self._http = Requester(
            api_key, client=client, timeout=timeout, max_retries=max_retries, backoff=backoff
        )

    def __repr__(self) -> str:
        return f"RunPodClient(endpoint_id={self.endpoint_id!r}, base_url={self.base_url!r})"

    async def run(
        self, input: Any, *, webhook: str | None = None, policy: JobPolicy | None = None
    ) -> Job:
        """Queue a job (``POST /run``); returns it IN_QUEUE with its id."""
        body = _job_body(input, webhook=webhook, policy=policy)
        data = await self._http.request(
            "POST",
            f"{self._url}/run",
            call="run",
            idempotent=False,
            not_found=self._no_endpoint(),
            body=body,
        )
        return parse_model(Job, data, "run")

    async def runsync(
        self, input: Any, *, wait_ms: int | None = None, policy: JobPolicy | None = None
    ) -> Job:
        """Run a job and wait up to ``wait_ms`` for it (``POST /runsync?wait=``).

        The job comes back COMPLETED/FAILED, or still IN_QUEUE/IN_PROGRESS if the wait ran
        out (poll ``status`` with its id). The read timeout is stretched by the wait so the
        client does not give up before RunPod does.
        """
        if wait_ms is not None and (isinstance(wait_ms, bool) or wait_ms <= 0):
            raise ValueError(f"wait_ms must be a positive number of milliseconds, got {wait_ms}")
        wait_s = (wait_ms if wait_ms is not None else DEFAULT_RUNSYNC_WAIT_MS) / 1000
        data = await self._http.request(
            "POST",
            f"{self._url}/runsync",
            call="runsync",
            idempotent=False,
            not_found=self._no_endpoint(),
            body=_job_body(input, webhook=None, policy=policy),
            params={"wait": wait_ms} if wait_ms is not None else None,
            read_timeout=self._http.timeout + wait_s,
        )
        return parse_model(Job, data, "runsync")

    async def status(self, job_id: str) -> Job:
        """``GET /status/{id}``."""
        return await self._job_call("GET", "status", job_id, idempotent=True)

    async def cancel(self, job_id: str) -> Job:
        """``POST /cancel/{id}``."""
        return await self._job_call("POST", "cancel", job_id, idempotent=True)

    async def retry(self, job_id: str) -> Job:
        """``POST /retry/{id}``: requeue a FAILED or TIMED_OUT job under the same id."""
        return await self._job_call("POST", "retry", job_id, idempotent=False)

    async def stream(self, job_id: str) -> StreamResult:
        """``GET /stream/{id}``: chunks a streaming handler produced since the last poll."""
        segment = path_segment(job_id, "job_id")
        return await self._read(
            "GET", f"stream/{segment}", StreamResult, "stream", self._no_job(job_id)
        )

    @asynccontextmanager
    async def openai_chat_stream(
        self, body: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[str]]:
        """``POST /openai/v1/chat/completions`` (RunPod's OpenAI-compatible route), streamed.

        Yields the ``data`` of each server-sent event as it arrives (``[DONE]`` included),
        for a caller that times the chunks; ``body`` should ask for ``"stream": true``. Not
        retried (see ``Requester.stream``); HTTP errors raise as for every other call.
        """
        async with self._http.stream(
            "POST",
            f"{self._url}/openai/v1/chat/completions",
            call="openai_chat",
            not_found=f"no OpenAI-compatible route at {self._url}/openai/v1 "
            "(an unknown endpoint, or a platform without the route)",
            body=body,
        ) as response:
            yield sse_data(response.aiter_text())

    async def openai_model_ids(self) -> list[str]:
        """``GET /openai/v1/models``: the ids of the models the OpenAI route serves."""
        data = await self._http.request(
            "GET",
            f"{self._url}/openai/v1/models",
            call="openai_models",
            idempotent=True,
            not_found=f"no OpenAI-compatible route at {self._url}/openai/v1 "
            "(an unknown endpoint, or a platform without the route)",
        )
        models = data.get("data")
        if not isinstance(models, list):
            raise RunPodProtocolError(
                "the answer has no 'data' list of models", call="openai_models", field="data"
            )
        return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def purge_queue(self) -> PurgeResult:
        """``POST /purge-queue``: drop every queued (not yet running) job."""
        return await self._read(
            "POST", "purge-queue", PurgeResult, "purge_queue", self._no_endpoint()
        )

    async def health(self) -> Health:
        """``GET /health``: job and worker counts."""
        return await self._read("GET", "health", Health, "health", self._no_endpoint())

    async def _read(
        self, method: str, path: str, model: type[ModelT], call: str, not_found: str
    ) -> ModelT:
        """An idempotent call under the endpoint whose answer is one typed model."""
        data = await self._http.request(
            method, f"{self._url}/{path}", call=call, idempotent=True, not_found=not_found
        )
        return parse_model(model, data, call)

    async def _job_call(self, method: str, call: str, job_id: str, *, idempotent: bool) -> Job:
        segment = path_segment(job_id, "job_id")
        data = await self._http.request(
            method,
            f"{self._url}/{call}/{segment}",
            call=call,
            idempotent=idempotent,
            not_found=self._no_job(job_id),
        )
        return parse_model(Job, data, call)

    def _no_endpoint(self) -> str:
        return f"unknown endpoint {self.endpoint_id!r} at {self.base_url}"

    def _no_job(self, job_id: str) -> str:
        return (
            f"unknown job id {job_id!r} on endpoint {self.endpoint_id!r} "
            "(or the endpoint itself does not exist)"
        )


def _job_body(input: Any, *, webhook: str | None, policy: JobPolicy | None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": input}
    if webhook is not None:
        body["webhook"] = webhook
    if policy is not None:
        body["policy"] = dict(policy)
    return body
