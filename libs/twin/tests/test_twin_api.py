"""The twin's public API, answered by real runpod SDK worker processes."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from podpulse.common.testing import wait_until
from podpulse.twin import RunningTwin


def test_runsync_returns_runpod_job_json_with_timings(api: httpx.Client) -> None:
    """/runsync answers COMPLETED with delayTime, executionTime, workerId and the output."""
    body = api.post("/runsync", json={"input": {"exec_ms": 30}}).json()
    assert body["status"] == "COMPLETED"
    assert set(body) == {"id", "status", "delayTime", "executionTime", "workerId", "output"}
    assert body["workerId"].startswith("twin-")
    # executionTime covers at least the handler's own 30 ms and its reported duration.
    assert body["executionTime"] >= 30
    assert body["executionTime"] >= int(body["output"]["timings"]["handler_ms"])
    assert body["output"]["model"] == "calibrated"


def test_run_then_status_follows_the_job_life_cycle(api: httpx.Client) -> None:
    """/run answers IN_QUEUE at once; /status later reports the finished job."""
    queued = api.post("/run", json={"input": {"exec_ms": 200}}).json()
    assert queued["status"] == "IN_QUEUE"
    assert set(queued) == {"id", "status"}
    seen = set()

    def finished() -> dict[str, Any] | None:
        body = api.get(f"/status/{queued['id']}").json()
        seen.add(body["status"])
        return body if body["status"] == "COMPLETED" else None

    done = wait_until(finished, 10, "the job to complete")
    assert isinstance(done, dict)
    assert "IN_PROGRESS" in seen
    assert done["id"] == queued["id"]
    assert done["executionTime"] >= 200


def test_concurrent_jobs_spread_over_both_workers(twin: RunningTwin, api: httpx.Client) -> None:
    """Sixteen concurrent /runsync calls all complete, served by both workers."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        bodies = list(
            pool.map(lambda i: api.post("/runsync", json={"input": {"n": i}}).json(), range(16))
        )
    assert [b["status"] for b in bodies] == ["COMPLETED"] * 16
    assert len({b["workerId"] for b in bodies}) == 2
    assert len({b["id"] for b in bodies}) == 16


def test_failed_job_reports_the_handler_error_and_can_be_retried(api: httpx.Client) -> None:
    """A handler error FAILS the job with its message; /retry queues it again, same id."""
    failed = api.post("/runsync", json={"input": {"fail": True, "exec_ms": 5}}).json()
    assert failed["status"] == "FAILED"
    assert "calibrated failure" in failed["error"]
    retried_before = api.get("/health").json()["jobs"]["retried"]
    again = api.post(f"/retry/{failed['id']}").json()
    assert again == {"id": failed["id"], "status": "IN_QUEUE"}
    wait_until(lambda: api.get(f"/status/{failed['id']}").json()["status"] == "FAILED", 10)
    assert api.get("/health").json()["jobs"]["retried"] == retried_before + 1
    completed = api.post("/runsync", json={"input": {}}).json()
    assert api.post(f"/retry/{completed['id']}").status_code == 400


def test_health_counts_jobs_and_workers(api: httpx.Client) -> None:
    """/health counts completed jobs and the two warm workers."""
    before = api.get("/health").json()
    api.post("/runsync", json={"input": {}})
    after = api.get("/health").json()
    assert after["jobs"]["completed"] == before["jobs"]["completed"] + 1
    assert after["jobs"]["inQueue"] == 0
    assert after["workers"]["idle"] + after["workers"]["running"] == 2


def test_bad_requests_get_runpod_shaped_errors_and_the_twin_keeps_serving(
    twin: RunningTwin, api: httpx.Client
) -> None:
    """Malformed JSON, no input, a huge body, a wrong key, bad ids: clear errors, no harm."""
    cases = [
        (api.post("/run", content=b"{not json"), 400, "not valid JSON"),
        (api.post("/run", json={"inputs": {}}), 400, "missing 'input'"),
        (api.post("/run", json=[1, 2]), 400, "JSON object"),
        (api.post("/run", content=b""), 400, "empty"),
        (api.post("/run", json={"input": {}, "policy": {"executionTimeout": -1}}), 400, "policy"),
        (api.post("/runsync?wait=5", json={"input": {}}), 400, "'wait'"),
        (api.get("/status/no-such-job"), 404, "not found"),
        (api.post("/cancel/no-such-job"), 404, "not found"),
        (api.post(f"{twin.base_url}/other-endpoint/run", json={"input": {}}), 404, "endpoint"),
        (api.post("/run", json={"input": "x" * (10 * 1024 * 1024)}), 413, "limit"),
        (
            api.post("/run", json={"input": {}}, headers={"Authorization": "Bearer wrong"}),
            401,
            "Unauthorized",
        ),
        (httpx.get(f"{twin.endpoint_url}/health"), 401, "Unauthorized"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["error"]
    assert api.post("/runsync", json={"input": {}}).json()["status"] == "COMPLETED"


# Bodies Python's parser takes but no JSON reply can carry back, or that exhaust the stack.
_UNCARRYABLE = [
    pytest.param(
        b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper", id="nested-100000"
    ),
    pytest.param(
        b'{"input": {"a": ' + b"[" * 150 + b"]" * 150 + b"}}", "nested deeper", id="nested-150"
    ),
    pytest.param(b'{"input": {"n": ' + b"9" * 5000 + b"}}", "too long", id="int-5000-digits"),
    pytest.param(b'{"input": {"x": NaN}}', "NaN", id="nan"),
    pytest.param(b'{"input": {"x": -Infinity}}', "-Infinity", id="minus-infinity"),
    pytest.param(b'{"input": {"x": 1e400}}', "body.input.x is inf", id="overflow"),
    pytest.param(
        b'{"input": {"q": "\\ud800"}}', "body.input.q holds a lone surrogate", id="lone-surrogate"
    ),
    pytest.param(b'{"input": {"\\udfff": 1}}', "lone surrogate", id="surrogate-key"),
]


@pytest.mark.parametrize(("body", "reason"), _UNCARRYABLE)
@pytest.mark.parametrize("route", ["/run", "/runsync"])
def test_bodies_no_reply_could_carry_are_refused_at_submission(
    api: httpx.Client, route: str, body: bytes, reason: str
) -> None:
    """Deep nesting, huge integers, NaN/Infinity, overflowing floats and lone surrogates get a
    400 naming the problem before any job exists; the twin then serves a good job."""
    before = api.get("/health").json()["jobs"]
    response = api.post(route, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert api.get("/health").json()["jobs"] == before  # nothing queued, nothing left running
    assert api.post("/runsync", json={"input": {"q": "fine 😀"}}).json()["status"] == "COMPLETED"


@pytest.mark.parametrize(("body", "reason"), _UNCARRYABLE[:4])
def test_the_management_patch_refuses_them_too(twin: RunningTwin, body: bytes, reason: str) -> None:
    """The v2 management PATCH reads its body through the same reader: a 400, config as it was."""
    url = f"{twin.base_url}/serverless/{twin.endpoint_id}"
    headers = {"Authorization": f"Bearer {twin.api_key}", "Content-Type": "application/json"}
    before = httpx.get(url, headers=headers).json()
    response = httpx.patch(url, content=body.replace(b'"input"', b'"workers"'), headers=headers)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert httpx.get(url, headers=headers).json() == before


def test_body_over_ten_megabytes_streamed_without_length_is_refused(api: httpx.Client) -> None:
    """A chunked /run body past 10 MB is cut off with 413, not buffered whole."""

    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = api.post("/run", content=chunks())
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_execution_timeout_from_policy_times_the_job_out(api: httpx.Client) -> None:
    """policy.executionTimeout ends a long job as TIMED_OUT with a clear error."""
    body = api.post(
        "/runsync",
        json={"input": {"exec_ms": 10_000}, "policy": {"executionTimeout": 500}},
    ).json()
    assert body["status"] == "TIMED_OUT"
    assert "executionTimeout" in body["error"]
    # Ended by the policy: not before its 500 ms, and long before the job's own 10 s.
    assert 500 <= body["executionTime"] < 10_000
    assert api.post("/runsync", json={"input": {}}).json()["status"] == "COMPLETED"


def test_runsync_wait_returns_in_progress_when_the_job_outlasts_it(api: httpx.Client) -> None:
    """/runsync?wait= holds the reply until the job ends or the wait runs out, whichever is
    first: a job that outlasts wait=1000 is answered still running, one within the wait whole."""
    whole = api.post("/runsync?wait=60000", json={"input": {"exec_ms": 1_000}}).json()
    assert whole["status"] == "COMPLETED"  # the reply waited for the job
    body = api.post("/runsync?wait=1000", json={"input": {"exec_ms": 3_000}}).json()
    assert body["status"] == "IN_PROGRESS"  # and answered before the job's 3 s were over
    assert "executionTime" not in body
    done = wait_until(lambda: api.get(f"/status/{body['id']}").json()["status"] == "COMPLETED", 10)
    assert done
