"""Changing the workers' environment while the twin runs rolls them, as a template change does.

A real twin on loopback with a real SDK worker: ``PATCH /twin/v1/{id}/env`` replaces the
worker with one started with the new variables (a busy one after its job, which completes),
``--unset`` goes back, and a refused body changes nothing. ``podpulse twin env`` is the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from twin_helpers import calibrated, small
from typer.testing import CliRunner

from podpulse.common.testing import wait_until
from podpulse.twin import RunningTwin, cli, running_twin

pytestmark = pytest.mark.slow

SLOW = {"TWIN_CALIBRATED_EXEC_MS": "600"}
WAITING = ("IN_QUEUE", "IN_PROGRESS")


def _env_url(twin: Any) -> str:
    return f"{twin.settings.url}/twin/v1/{twin.endpoint_id}/env"


def _patch(twin: Any, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or twin.api_key}"}
    return httpx.patch(_env_url(twin), json=body, headers=headers, timeout=10)


def _job(api: httpx.Client, **job_input: Any) -> dict[str, Any]:
    body: dict[str, Any] = api.post("/runsync", json={"input": job_input}).json()
    assert body["status"] == "COMPLETED", body
    return body


def test_a_change_rolls_the_worker_and_unset_goes_back() -> None:
    """50 ms jobs; TWIN_CALIBRATED_EXEC_MS=600 replaces the worker and jobs take 600 ms;
    unsetting it replaces the worker again and jobs take 50 ms."""
    with running_twin(small(), calibrated()) as twin, twin.client() as api:
        twin.wait_ready(1)
        first = _job(api)
        assert first["executionTime"] < 400
        answer = _patch(twin, {"env": SLOW})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "env": ["TWIN_CALIBRATED_EXEC_MS"],
            "revision": 1,
            "workersToRoll": 1,
        }
        slow = _job(api)
        assert slow["workerId"] != first["workerId"]
        assert slow["executionTime"] >= 600
        back = _patch(twin, {"env": {"TWIN_CALIBRATED_EXEC_MS": None}}).json()
        assert back["env"] == []
        assert back["revision"] == 2
        fast = _job(api)
        assert fast["workerId"] not in (first["workerId"], slow["workerId"])
        assert fast["executionTime"] < 400
        shown = httpx.get(_env_url(twin), headers={"Authorization": twin.api_key}).json()
        assert shown == {"env": [], "revision": 2, "workersToRoll": 0}


def test_a_busy_worker_finishes_its_job_before_it_is_rolled() -> None:
    """A change made while a 1.5 s job runs: the job completes on the old worker, and the
    next job runs on a new one with the new variables."""
    with running_twin(small(), calibrated()) as twin, twin.client() as api:
        twin.wait_ready(1)
        job_id = api.post("/run", json={"input": {"exec_ms": 1500}}).json()["id"]
        wait_until(twin.platform.queue.in_progress, timeout_s=20, what="the job runs")
        assert _patch(twin, {"env": SLOW}).json()["workersToRoll"] == 1

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/status/{job_id}").json()
            return None if body["status"] in ("IN_QUEUE", "IN_PROGRESS") else body

        done = wait_until(ended, timeout_s=20, what="the job's end", poll_s=0.05)
        assert done["status"] == "COMPLETED", done
        after = _job(api)
        assert after["workerId"] != done["workerId"]
        assert after["executionTime"] >= 600


def test_a_worker_never_idle_is_still_rolled() -> None:
    """Three clients keep one worker busy without a pause; after the change it takes no new
    job (it finishes the one it has), so it is replaced, and jobs take the new time."""
    with running_twin(small(), calibrated(exec_ms=400)) as twin:
        twin.wait_ready(1)
        stop = threading.Event()
        seen: list[dict[str, Any]] = []

        def client() -> None:
            # /run and a /status poll, as the prober does: a new job is not sent the moment
            # one ends, so the queue is never empty when the worker asks for its next.
            with twin.client() as api:
                while not stop.is_set():
                    job_id = api.post("/run", json={"input": {}}).json()["id"]
                    while (body := api.get(f"/status/{job_id}").json())["status"] in WAITING:
                        time.sleep(0.2)
                    seen.append(body)

        threads = [threading.Thread(target=client) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(seen) >= 3, timeout_s=20, what="jobs flowing")
            assert twin.platform.queue.in_progress() or twin.platform.queue.in_queue()
            (old,) = twin.platform.pool.workers
            assert _patch(twin, {"env": SLOW}).json()["workersToRoll"] == 1
            # Every job the old worker had taken by now; it must take none after.
            taken = _taken(twin)
            wait_until(lambda: seen[-1]["executionTime"] >= 600, timeout_s=20,
                       what="a job on the rolled worker")  # fmt: skip
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert all(job["status"] == "COMPLETED" for job in seen)
        late = [j["id"] for j in seen if j["workerId"] == old and j["id"] not in taken]
        assert late == []


def _taken(twin: Any) -> set[str]:
    # The twin runs in another thread: copy its jobs, again if they changed meanwhile.
    while True:
        try:
            jobs = list(twin.platform.queue.jobs.values())
        except RuntimeError:
            continue
        return {job.id for job in jobs if job.status.value != "IN_QUEUE"}


@pytest.fixture(scope="module")
def refusing_twin() -> Iterator[RunningTwin]:
    """One twin for every refused body: a refusal changes nothing, so each case still starts
    from revision 0 (one that leaked would fail every case after it). No worker: none is
    needed to refuse, and a cold start an hour long keeps it that way."""
    settings = small(workers_min=0, api_key="twin-env-key", cold_start_ms=3_600_000)
    with running_twin(settings, calibrated()) as twin:
        yield twin


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "the body must be a JSON object"),
        ({"env": {}}, "env must be a non-empty JSON object"),
        ({"env": SLOW, "other": 1}, "unknown field(s): 'other'"),
        ({"env": {"RUNPOD_WEBHOOK_GET_JOB": "x"}}, "env.RUNPOD_WEBHOOK_GET_JOB: set by the plat"),
        ({"env": {"TWIN_API_KEY": "x"}}, "env.TWIN_API_KEY: set by the platform or a secret"),
        ({"env": {"SLACK_WEBHOOK_URL": "x"}}, "env.SLACK_WEBHOOK_URL: set by the platform"),
        ({"env": {"A B": "x"}}, "env.'A B': not a variable name"),
        ({"env": {"N": 5}}, "env.N: must be a string or null"),
        ({"env": {"N": "x" * 5000}}, "env.N: must be under 4096 characters"),
        ({"env": {"N": "twin-env-key"}}, "env.N: holds a secret of the twin's"),
        ({"env": {f"N{i}": "x" for i in range(65)}}, "at most 64 variables"),
    ],
)
def test_a_refused_body_names_the_entry_and_changes_nothing(
    refusing_twin: RunningTwin, body: Any, why: str
) -> None:
    """Each bad body is a 400 naming what is wrong (never the value); nothing is rolled."""
    twin = refusing_twin
    answer = _patch(twin, body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert why in error
    assert "twin-env-key" not in error
    assert "xxxx" not in error
    assert twin.platform.pool.env_revision == 0
    assert twin.platform.pool.env_overrides == {}
    assert _patch(twin, {"env": SLOW}, key="wrong").status_code == 401


def test_the_cli_sets_shows_and_unsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """``podpulse twin env`` finds the twin by TWIN_* settings, sets, shows and unsets; a
    malformed argument exits 2, an unreachable twin 1, each with one line."""
    settings = small(workers_min=0, cold_start_ms=3_600_000)
    with running_twin(settings, calibrated()) as twin:
        monkeypatch.setenv("TWIN_PORT", str(twin.settings.port))
        runner = CliRunner()
        done = runner.invoke(cli.app, ["env", "TWIN_CALIBRATED_EXEC_MS=6000"])
        assert done.exit_code == 0, done.output
        assert "worker env overrides in force: TWIN_CALIBRATED_EXEC_MS; revision 1" in done.output
        assert twin.platform.pool.env_overrides == {"TWIN_CALIBRATED_EXEC_MS": "6000"}
        shown = runner.invoke(cli.app, ["env"])
        assert "TWIN_CALIBRATED_EXEC_MS; revision 1" in shown.output
        unset = runner.invoke(cli.app, ["env", "--unset", "TWIN_CALIBRATED_EXEC_MS"])
        assert "overrides in force: none; revision 2" in unset.output
        bad = runner.invoke(cli.app, ["env", "NOVALUE"])
        assert bad.exit_code == 2
        assert "expected NAME=VALUE, got 'NOVALUE'" in bad.output
        refused = runner.invoke(cli.app, ["env", "RUNPOD_X=1"])
        assert refused.exit_code == 1
        assert "answered 400: env.RUNPOD_X: set by the platform" in refused.output
    gone = CliRunner().invoke(cli.app, ["env", "A=1"])
    assert gone.exit_code == 1
    assert "no answer from the twin at http://127.0.0.1:" in gone.output
