"""RunPodClient against httpx.MockTransport: exact requests, retries, errors, key handling."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from podpulse.common.runpod import (
    Backoff,
    Health,
    Job,
    JobStatus,
    PurgeResult,
    RunPodAuthError,
    RunPodBadRequest,
    RunPodClient,
    RunPodConnectionError,
    RunPodError,
    RunPodNotFound,
    RunPodProtocolError,
    RunPodRateLimited,
    RunPodServerError,
    RunPodTimeout,
    StreamResult,
    parse_retry_after,
)

KEY = "rp_SECRET_KEY_0123456789"
ENDPOINT = "ep-123"
BASE = "https://api.runpod.ai/v2"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """Plays scripted replies in order and records every request it receives."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, api_key: Any = KEY, *, max_retries: int = 3, **kw: Any) -> RunPodClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        backoff = Backoff(sleep=self.sleep, now=lambda: NOW, jitter=lambda: 0.5, **kw)
        return RunPodClient(
            ENDPOINT, api_key, client=http, max_retries=max_retries, backoff=backoff
        )


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=data, headers=headers)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


QUEUED = {"id": "job-1", "status": "IN_QUEUE"}
DONE = {
    "id": "job-1",
    "status": "COMPLETED",
    "delayTime": 812,
    "executionTime": 2411,
    "output": {"text": "hi", "tokens": 7},
    "workerId": "w-9",
    "retries": 0,
}
PURGED = {"removed": 0, "status": "completed"}
HEALTH = {
    "jobs": {"completed": 10, "failed": 1, "inProgress": 2, "inQueue": 3, "retried": 0},
    "workers": {"idle": 1, "running": 2, "initializing": 1},
}


# --- exact requests -----------------------------------------------------------------------


async def test_run_sends_input_webhook_and_policy() -> None:
    """run() POSTs {input, webhook, policy} to /{endpoint}/run with the bearer key."""
    server = Server(ok(QUEUED))
    async with server.client() as rp:
        job = await rp.run(
            {"prompt": "hi"},
            webhook="https://hook.example/x",
            policy={"executionTimeout": 60000, "ttl": 120000, "lowPriority": True},
        )
    (request,) = server.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/{ENDPOINT}/run"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert body(request) == {
        "input": {"prompt": "hi"},
        "webhook": "https://hook.example/x",
        "policy": {"executionTimeout": 60000, "ttl": 120000, "lowPriority": True},
    }
    assert job.id == "job-1"
    assert job.status is JobStatus.IN_QUEUE


async def test_run_without_options_sends_only_input() -> None:
    """run() leaves webhook and policy out of the body when not given."""
    server = Server(ok(QUEUED))
    async with server.client() as rp:
        await rp.run({"prompt": "hi"})
    assert body(server.requests[0]) == {"input": {"prompt": "hi"}}


async def test_runsync_sends_wait_and_parses_timing_fields() -> None:
    """runsync(wait_ms=) sends ?wait=ms and maps delayTime/executionTime/workerId, keeping raw."""
    server = Server(ok(DONE))
    async with server.client() as rp:
        job = await rp.runsync({"prompt": "hi"}, wait_ms=30000, policy={"ttl": 5000})
    (request,) = server.requests
    assert request.method == "POST"
    assert request.url.path == f"/v2/{ENDPOINT}/runsync"
    assert dict(request.url.params) == {"wait": "30000"}
    assert body(request) == {"input": {"prompt": "hi"}, "policy": {"ttl": 5000}}
    assert (job.delay_time_ms, job.execution_time_ms, job.worker_id) == (812, 2411, "w-9")
    assert job.output == {"text": "hi", "tokens": 7}
    assert job.raw == DONE
    assert job.model_extra == {"retries": 0}


async def test_runsync_read_timeout_covers_the_server_wait() -> None:
    """runsync stretches the read timeout by the wait (default 90 s) so the client outlasts it."""
    server = Server(ok(DONE), ok(DONE))
    async with server.client() as rp:
        await rp.runsync({})
        await rp.runsync({}, wait_ms=5000)
    default, short = (r.extensions["timeout"] for r in server.requests)
    assert "wait" not in server.requests[0].url.params
    assert default["read"] == 30.0 + 90.0
    assert short["read"] == 30.0 + 5.0
    assert short["connect"] == 30.0


@pytest.mark.parametrize("wait_ms", [0, -5, True])
async def test_runsync_rejects_bad_wait(wait_ms: int) -> None:
    """runsync refuses a non-positive wait before sending anything."""
    server = Server()
    async with server.client() as rp:
        with pytest.raises(ValueError, match="wait_ms"):
            await rp.runsync({}, wait_ms=wait_ms)
    assert server.requests == []


async def test_status_gets_job_and_quotes_the_id() -> None:
    """status() GETs /status/{id} with the id URL-quoted, so an id cannot change the path."""
    server = Server(ok({"id": "a/b", "status": "IN_PROGRESS"}))
    async with server.client() as rp:
        job = await rp.status("a/b")
    (request,) = server.requests
    assert request.method == "GET"
    assert request.url.raw_path == f"/v2/{ENDPOINT}/status/a%2Fb".encode()
    assert request.content == b""
    assert job.status is JobStatus.IN_PROGRESS
    assert job.delay_time_ms is None


@pytest.mark.parametrize("call", ["cancel", "retry"])
async def test_cancel_and_retry_post_to_job_path(call: str) -> None:
    """cancel()/retry() POST /{call}/{id} and return the job they report."""
    server = Server(ok({"id": "job-1", "status": "CANCELLED"}))
    async with server.client() as rp:
        job = await getattr(rp, call)("job-1")
    (request,) = server.requests
    assert (request.method, request.url.path) == ("POST", f"/v2/{ENDPOINT}/{call}/job-1")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert job.status is JobStatus.CANCELLED


async def test_stream_parses_chunks() -> None:
    """stream() GETs /stream/{id} and returns the status and each {output} chunk."""
    data = {"status": "IN_PROGRESS", "stream": [{"output": "Hel"}, {"output": "lo"}]}
    server = Server(ok(data))
    async with server.client() as rp:
        result = await rp.stream("job-1")
    assert server.requests[0].url.path == f"/v2/{ENDPOINT}/stream/job-1"
    assert isinstance(result, StreamResult)
    assert result.status is JobStatus.IN_PROGRESS
    assert [chunk.output for chunk in result.stream] == ["Hel", "lo"]


async def test_purge_queue_posts_and_parses() -> None:
    """purge_queue() POSTs /purge-queue and returns removed and status."""
    server = Server(ok({"removed": 4, "status": "completed"}))
    async with server.client() as rp:
        result = await rp.purge_queue()
    request = server.requests[0]
    assert (request.method, request.url.path) == ("POST", f"/v2/{ENDPOINT}/purge-queue")
    assert result == PurgeResult(removed=4, status="completed")


async def test_health_parses_counts_and_keeps_extra_worker_counts() -> None:
    """health() maps inQueue/inProgress and keeps worker counts beyond idle/running."""
    server = Server(ok(HEALTH))
    async with server.client() as rp:
        health = await rp.health()
    assert server.requests[0].method == "GET"
    assert server.requests[0].url.path == f"/v2/{ENDPOINT}/health"
    assert isinstance(health, Health)
    assert (health.jobs.in_queue, health.jobs.in_progress, health.jobs.completed) == (3, 2, 10)
    assert (health.workers.idle, health.workers.running) == (1, 2)
    assert health.workers.model_extra == {"initializing": 1}


async def test_custom_base_url_is_used_for_the_twin() -> None:
    """A base_url (e.g. the local twin) replaces api.runpod.ai, trailing slash tolerated."""
    server = Server(ok(HEALTH))
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
    async with (
        http,
        RunPodClient(ENDPOINT, KEY, base_url="http://127.0.0.1:8123/v2/", client=http) as rp,
    ):
        await rp.health()
    assert str(server.requests[0].url) == f"http://127.0.0.1:8123/v2/{ENDPOINT}/health"


# --- keys -------------------------------------------------------------------------------


async def test_callable_key_is_reread_on_every_request() -> None:
    """A callable api_key is called per request, so a rotated key is used at once."""
    keys = iter(["key-one", "key-two"])
    server = Server(ok(QUEUED), ok(QUEUED))
    async with server.client(lambda: next(keys)) as rp:
        await rp.status("job-1")
        await rp.status("job-1")
    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer key-one",
        "Bearer key-two",
    ]


async def test_callable_key_is_reread_between_retries() -> None:
    """A retry after 429 re-reads the key rather than resending a stale one."""
    keys = iter(["old-key", "new-key"])
    server = Server(ok({}, 429), ok(QUEUED))
    async with server.client(lambda: next(keys)) as rp:
        await rp.run({})
    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer old-key",
        "Bearer new-key",
    ]


async def test_missing_key_fails_before_sending() -> None:
    """An empty key raises RunPodAuthError without any request going out."""
    server = Server()
    async with server.client(lambda: "  ") as rp:
        with pytest.raises(RunPodAuthError, match="no API key"):
            await rp.health()
    assert server.requests == []


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_raises_auth_error_without_the_key(status: int) -> None:
    """401/403 raise RunPodAuthError saying the key was rejected, never quoting it, no retry."""
    server = Server(ok({"error": f"bad key {KEY}"}, status))
    async with server.client() as rp:
        with pytest.raises(RunPodAuthError) as caught:
            await rp.health()
    assert "key was rejected" in str(caught.value)
    assert KEY not in str(caught.value)
    assert caught.value.status_code == status
    assert len(server.requests) == 1


def test_repr_never_shows_the_key() -> None:
    """The client's repr names the endpoint and base URL, not the key."""
    rp = RunPodClient(ENDPOINT, KEY, client=httpx.AsyncClient())
    assert KEY not in repr(rp)
    assert ENDPOINT in repr(rp)


async def test_key_echoed_by_server_is_redacted_from_errors() -> None:
    """A 5xx body that echoes the key is quoted with the key replaced by ***."""
    server = Server(ok({"detail": f"Authorization: Bearer {KEY}"}, 500))
    async with server.client(max_retries=0) as rp:
        with pytest.raises(RunPodServerError) as caught:
            await rp.health()
    assert KEY not in str(caught.value)
    assert KEY not in caught.value.body_excerpt
    assert "Bearer ***" in caught.value.body_excerpt


async def test_retry_logs_never_contain_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """Retry log lines name the call and status but not the key."""
    server = Server(ok({}, 503), ok(HEALTH))
    caplog.set_level(logging.DEBUG, logger="podpulse.common.runpod")
    async with server.client() as rp:
        await rp.health()
    assert "health: HTTP 503, retry 1/3" in caplog.text
    assert KEY not in caplog.text


# --- retries ------------------------------------------------------------------------------


async def test_429_honours_retry_after_seconds() -> None:
    """A 429 with Retry-After: 2 waits 2 s and resends the identical request."""
    server = Server(ok({}, 429, {"Retry-After": "2"}), ok(QUEUED))
    async with server.client() as rp:
        job = await rp.run({"prompt": "hi"})
    assert server.sleeps == [2.0]
    first, second = server.requests
    assert (first.method, first.url, first.content) == (second.method, second.url, second.content)
    assert job.id == "job-1"


async def test_retry_after_http_date_is_measured_from_now() -> None:
    """Retry-After as an HTTP-date waits until that moment (by the injected clock)."""
    server = Server(ok({}, 503, {"Retry-After": "Fri, 02 Jan 2026 03:04:12 GMT"}), ok(HEALTH))
    async with server.client() as rp:
        await rp.health()
    assert server.sleeps == [7.0]


async def test_retry_after_is_capped() -> None:
    """A Retry-After longer than retry_after_cap_s waits only the cap."""
    server = Server(ok({}, 429, {"Retry-After": "3600"}), ok(HEALTH))
    async with server.client(retry_after_cap_s=10.0) as rp:
        await rp.health()
    assert server.sleeps == [10.0]


async def test_backoff_is_exponential_with_jitter_without_retry_after() -> None:
    """Without Retry-After waits double per attempt (half fixed, half jittered), capped."""
    server = Server(ok({}, 502), ok({}, 503), ok({}, 504), ok({}, 500), ok(HEALTH))
    async with server.client(max_retries=4, base_s=0.5, max_s=2.0) as rp:
        await rp.health()
    # jitter() is pinned at 0.5: each wait is 0.75 of min(max_s, base_s * 2**attempt).
    assert server.sleeps == [0.375, 0.75, 1.5, 1.5]


async def test_429_after_all_retries_raises_rate_limited() -> None:
    """Persistent 429 raises RunPodRateLimited after max_retries + 1 attempts."""
    server = Server(*[ok({}, 429, {"Retry-After": "1"}) for _ in range(3)])
    async with server.client(max_retries=2) as rp:
        with pytest.raises(RunPodRateLimited, match=r"run: rate limited \(HTTP 429\) after 2"):
            await rp.run({})
    assert len(server.requests) == 3
    assert server.sleeps == [1.0, 1.0]


async def test_5xx_after_all_retries_raises_server_error_with_excerpt() -> None:
    """Persistent 5xx on a read raises RunPodServerError with the status and body excerpt."""
    server = Server(*[httpx.Response(502, text="upstream <b>gone</b>") for _ in range(4)])
    async with server.client() as rp:
        with pytest.raises(RunPodServerError) as caught:
            await rp.status("job-1")
    assert len(server.requests) == 4
    assert caught.value.status_code == 502
    assert caught.value.body_excerpt == "upstream <b>gone</b>"
    assert "HTTP 502 after 3 retries" in str(caught.value)


@pytest.mark.parametrize("call", ["run", "runsync", "retry"])
async def test_job_creating_posts_are_not_retried_on_5xx(call: str) -> None:
    """run/runsync/retry fail on the first 5xx: the job may already be queued server-side."""
    server = Server(ok({"error": "boom"}, 500), ok(QUEUED))
    async with server.client() as rp:
        with pytest.raises(RunPodServerError, match="not retried") as caught:
            await (rp.retry("job-1") if call == "retry" else getattr(rp, call)({}))
    assert len(server.requests) == 1
    assert server.sleeps == []
    assert caught.value.call == call


@pytest.mark.parametrize("call", ["cancel", "purge_queue"])
async def test_idempotent_posts_are_retried_on_5xx(call: str) -> None:
    """cancel and purge_queue are retried on 5xx because repeating them is harmless."""
    reply = {"id": "job-1", "status": "CANCELLED"} if call == "cancel" else PURGED
    server = Server(ok({}, 503), ok(reply))
    async with server.client() as rp:
        await (rp.cancel("job-1") if call == "cancel" else rp.purge_queue())
    assert len(server.requests) == 2


async def test_run_is_retried_when_the_connection_never_opened() -> None:
    """A connect failure on run() is retried: nothing reached RunPod."""
    server = Server(httpx.ConnectError("refused"), ok(QUEUED))
    async with server.client() as rp:
        job = await rp.run({})
    assert len(server.requests) == 2
    assert job.id == "job-1"


async def test_run_is_not_retried_when_the_connection_drops_after_sending() -> None:
    """A connection dropped mid-response on run() raises RunPodConnectionError, no resend."""
    server = Server(httpx.RemoteProtocolError("peer closed"), ok(QUEUED))
    async with server.client() as rp:
        with pytest.raises(RunPodConnectionError, match="run: connection failed"):
            await rp.run({})
    assert len(server.requests) == 1


async def test_status_is_retried_when_the_connection_drops() -> None:
    """A dropped connection on a read is retried."""
    server = Server(httpx.ReadError("reset"), ok(QUEUED))
    async with server.client() as rp:
        await rp.status("job-1")
    assert len(server.requests) == 2


async def test_read_timeout_raises_timeout_naming_call_and_seconds() -> None:
    """A read timeout raises RunPodTimeout naming the call and the limit, without retrying."""
    server = Server(httpx.ReadTimeout("slow"), ok(DONE))
    async with server.client() as rp:
        with pytest.raises(RunPodTimeout) as caught:
            await rp.runsync({}, wait_ms=10000)
    assert str(caught.value) == "RunPod runsync: timed out after 40s waiting for the response"
    assert caught.value.timeout_s == 40.0
    assert len(server.requests) == 1


async def test_connect_timeout_is_retried_then_reported() -> None:
    """Connect timeouts are retried and, if they persist, reported as RunPodTimeout."""
    server = Server(*[httpx.ConnectTimeout("slow") for _ in range(2)])
    async with server.client(max_retries=1) as rp:
        with pytest.raises(RunPodTimeout, match="health: timed out after 30s connecting"):
            await rp.health()
    assert len(server.requests) == 2


# --- other errors -----------------------------------------------------------------------


async def test_404_on_a_job_names_job_and_endpoint() -> None:
    """404 on status raises RunPodNotFound naming the job id and endpoint."""
    server = Server(ok({"error": "not found"}, 404))
    async with server.client() as rp:
        with pytest.raises(RunPodNotFound, match=r"unknown job id 'job-x' on endpoint 'ep-123'"):
            await rp.status("job-x")
    assert len(server.requests) == 1


async def test_404_on_the_endpoint_names_it() -> None:
    """404 on health raises RunPodNotFound naming the endpoint."""
    server = Server(httpx.Response(404))
    async with server.client() as rp:
        with pytest.raises(RunPodNotFound, match=r"unknown endpoint 'ep-123'"):
            await rp.health()


async def test_400_carries_runpods_error_text() -> None:
    """400 raises RunPodBadRequest quoting RunPod's error field."""
    server = Server(ok({"error": "input is required"}, 400))
    async with server.client() as rp:
        with pytest.raises(RunPodBadRequest, match=r"HTTP 400\): input is required$"):
            await rp.run(None)
    assert len(server.requests) == 1


async def test_non_json_response_is_a_protocol_error() -> None:
    """A 200 with an HTML body raises RunPodProtocolError saying it is not JSON."""
    server = Server(httpx.Response(200, text="<html>gateway</html>"))
    async with server.client() as rp:
        with pytest.raises(RunPodProtocolError, match="status: response is not JSON"):
            await rp.status("job-1")


async def test_json_that_is_not_an_object_is_a_protocol_error() -> None:
    """A JSON list where an object belongs raises RunPodProtocolError."""
    server = Server(ok([1, 2]))
    async with server.client() as rp:
        with pytest.raises(RunPodProtocolError, match="expected a JSON object, got list"):
            await rp.health()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "COMPLETED"}, "id"),
        ({"id": "job-1", "status": "DONE"}, "status"),
        ({"id": "job-1", "status": "COMPLETED", "delayTime": "soon"}, "delayTime"),
    ],
)
async def test_wrong_job_shape_names_the_field(data: dict[str, Any], field: str) -> None:
    """A job JSON missing or mistyping a field raises RunPodProtocolError naming it."""
    server = Server(ok(data))
    async with server.client() as rp:
        with pytest.raises(RunPodProtocolError, match=f"field '{field}'") as caught:
            await rp.status("job-1")
    assert caught.value.field == field


async def test_wrong_health_shape_names_the_nested_field() -> None:
    """Health without jobs.inQueue raises RunPodProtocolError naming 'jobs.inQueue'."""
    data = json.loads(json.dumps(HEALTH))
    del data["jobs"]["inQueue"]
    server = Server(ok(data))
    async with server.client() as rp:
        with pytest.raises(RunPodProtocolError, match=r"field 'jobs\.inQueue'"):
            await rp.health()


def test_every_error_is_a_runpod_error() -> None:
    """Each exported error class can be caught as RunPodError."""
    for cls in (
        RunPodAuthError,
        RunPodBadRequest,
        RunPodConnectionError,
        RunPodNotFound,
        RunPodProtocolError,
        RunPodRateLimited,
        RunPodServerError,
        RunPodTimeout,
    ):
        assert issubclass(cls, RunPodError)


@pytest.mark.parametrize("endpoint_id", ["", " ", ".."])
def test_empty_endpoint_id_is_refused(endpoint_id: str) -> None:
    """An empty or path-like endpoint id is refused at construction."""
    with pytest.raises(ValueError, match="endpoint_id"):
        RunPodClient(endpoint_id, KEY, client=httpx.AsyncClient())


# --- lifecycle and small pieces -----------------------------------------------------------


async def test_injected_client_is_reused_and_left_open() -> None:
    """Calls share the injected AsyncClient, and closing RunPodClient does not close it."""
    server = Server(ok(HEALTH), ok(HEALTH))
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
    async with RunPodClient(ENDPOINT, KEY, client=http) as rp:
        await rp.health()
        await rp.health()
    assert not http.is_closed
    assert len(server.requests) == 2
    await http.aclose()


async def test_own_client_is_closed_on_exit() -> None:
    """Without an injected client, leaving the context closes the pool it created."""
    async with RunPodClient(ENDPOINT, KEY) as rp:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await rp.health()


def test_job_status_finality() -> None:
    """Only IN_QUEUE and IN_PROGRESS are not final."""
    assert {s for s in JobStatus if not s.is_final} == {JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS}


def test_job_rounds_float_milliseconds() -> None:
    """A float executionTime (e.g. from a twin) is rounded to whole ms, not refused."""
    job = Job.model_validate({"id": "j", "status": "COMPLETED", "executionTime": 2410.6})
    assert job.execution_time_ms == 2411


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("Fri, 02 Jan 2026 03:04:15 GMT", 10.0),
        ("Fri, 02 Jan 2026 03:00:00 GMT", 0.0),
        ("-4", 0.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After reads delta-seconds and HTTP-dates; past means 0, junk means None."""
    assert parse_retry_after(header, NOW) == expected
