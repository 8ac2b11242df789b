"""The twin's scaler: real worker processes started and stopped as RunPod's would be."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from twin_helpers import TESTS, calibrated, small

from podpulse.common.runpod import EndpointConfig, ManagementClient, ScalerType
from podpulse.common.testing import wait_until
from podpulse.twin import running_twin

pytestmark = pytest.mark.slow


def test_queue_delay_scales_up_then_idle_workers_stop(tmp_path: Path) -> None:
    """QUEUE_DELAY adds workers while requests wait; idle ones stop after idleTimeout."""
    release = tmp_path / "release"
    with (
        running_twin(
            small(
                handler="progress_handler:handler",
                workers_max=3,
                scaler_value=0.5,
                idle_timeout_s=2,
            ),
            calibrated(),
            worker_env={"PYTHONPATH": TESTS},
        ) as twin,
        twin.client() as api,
    ):
        # Jobs that hold until released: the queue waits however fast the machine is, so the
        # scaler must add workers, and three held at once can only be on three workers.
        ids = [
            api.post("/run", json={"input": {"release": str(release)}}).json()["id"]
            for _ in range(6)
        ]

        def three_held() -> list[dict[str, Any]] | None:
            bodies = [api.get(f"/status/{i}").json() for i in ids]
            held = [b for b in bodies if b["status"] == "IN_PROGRESS" and b.get("output") == "25%"]
            return held if len(held) == 3 else None

        running = wait_until(three_held, 60, "three jobs held at once")
        assert len({body["workerId"] for body in running}) == 3
        assert len(twin.platform.pool.workers) == 3
        release.touch()
        wait_until(
            lambda: all(api.get(f"/status/{i}").json()["status"] == "COMPLETED" for i in ids),
            60,
            "all six jobs",
        )
        # Back to workersMin once the extra workers have idled for 2 s.
        wait_until(lambda: len(twin.platform.pool.workers) == 1, 30, "scale-down to one")

        def one_serving() -> bool:
            # The one left may still be starting (a stopped worker's place is refilled): wait
            # for it to serve rather than read /health once, at whatever moment that is.
            workers = api.get("/health").json()["workers"]
            return bool(workers["idle"] + workers["running"] == 1)

        wait_until(one_serving, 30, "one worker idle or running")
        assert len(twin.platform.pool.workers) == 1
        served = api.post("/runsync", json={"input": {"release": str(release)}}).json()
        assert served["status"] == "COMPLETED"


def test_the_first_workers_start_warm_and_those_added_later_pay_the_cold_start() -> None:
    """The always-on workers are up as the twin starts, however long its cold start (an hour
    here); a worker the scaler adds later waits the cold start out."""
    settings = small(workers_min=1, workers_max=2, scaler_type="REQUEST_COUNT", scaler_value=1,
                     cold_start_ms=3_600_000)  # fmt: skip
    with running_twin(settings, calibrated()) as twin, twin.client() as api:
        for _ in range(2):
            api.post("/run", json={"input": {"exec_ms": 5000}})
        wait_until(lambda: len(twin.platform.pool.workers) == 2, 10, "a second worker")
        assert api.get("/health").json()["workers"]["initializing"] == 1


def test_request_count_scales_from_zero_with_cold_start() -> None:
    """REQUEST_COUNT starts ceil(jobs / n) workers from zero; cold start shows in delayTime."""
    with (
        running_twin(
            small(
                workers_min=0,
                workers_max=2,
                scaler_type="REQUEST_COUNT",
                scaler_value=1,
                idle_timeout_s=30,
                cold_start_ms=500,
            ),
            calibrated(),
        ) as twin,
        twin.client() as api,
    ):
        assert api.get("/health").json()["workers"] == {
            "idle": 0, "running": 0, "initializing": 0, "ready": 0, "throttled": 0,
            "unhealthy": 0,
        }  # fmt: skip
        ids = [api.post("/run", json={"input": {"exec_ms": 300}}).json()["id"] for _ in range(2)]
        wait_until(lambda: api.get("/health").json()["workers"]["initializing"] == 2, 5)
        bodies = wait_until(
            lambda: (
                [
                    b
                    for b in (api.get(f"/status/{i}").json() for i in ids)
                    if b["status"] == "COMPLETED"
                ]
                if all(api.get(f"/status/{i}").json()["status"] == "COMPLETED" for i in ids)
                else None
            ),
            60,
            "both jobs",
        )
        # Each job waited at least the 500 ms cold-start delay plus a real process start.
        assert min(b["delayTime"] for b in bodies) >= 500
        # Both started workers come up. Which of them served which job is a race: under load
        # the first one can finish its job before the second is ready and take the next.
        twin.wait_ready(2, timeout_s=30)


def test_management_patch_changes_scaling_live() -> None:
    """The v2 management client reads and changes the twin's settings; bad values get 400."""
    with running_twin(small(), calibrated(exec_ms=1500)) as twin:

        async def scenario() -> tuple[EndpointConfig, EndpointConfig]:
            url = twin.base_url
            async with ManagementClient(twin.api_key, base_url=url) as mgmt:
                before = await mgmt.get(twin.endpoint_id)
                after = await mgmt.update(
                    twin.endpoint_id,
                    EndpointConfig(
                        workers_min=2,
                        workers_max=4,
                        idle_timeout_s=180,
                        scaler_type=ScalerType.QUEUE_DELAY,
                        scaler_value=1,
                    ),
                )
                return before, after

        before, after = asyncio.run(scenario())
        # What the client refuses to send, the twin refuses too, saying which field.
        refused = httpx.patch(
            f"{twin.base_url}/serverless/{twin.endpoint_id}",
            json={"scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.1}},
            headers={"Authorization": f"Bearer {twin.api_key}"},
        )
        assert refused.status_code == 400
        assert "queueDelay" in refused.json()["error"]
        assert httpx.patch(
            f"{twin.base_url}/serverless/{twin.endpoint_id}",
            json={"workers": {"min": 1}, "colour": "red"},
            headers={"Authorization": f"Bearer {twin.api_key}"},
        ).json() == {"error": "unknown field(s): colour"}
        assert (before.workers_min, before.workers_max) == (1, 1)
        assert (after.workers_min, after.workers_max, after.idle_timeout_s) == (2, 4, 180)
        # workersMin 2 is acted on: a second real worker starts and asks for jobs.
        twin.wait_ready(2, timeout_s=30)
        assert len(twin.platform.pool.workers) == 2


def test_lowering_workers_max_stops_the_extra_workers_but_never_below_min() -> None:
    """PATCH workersMax 3 -> 1 (min 1) stops two idle workers and keeps exactly one."""
    with running_twin(
        small(workers_min=3, workers_max=3, idle_timeout_s=600), calibrated()
    ) as twin:
        response = httpx.patch(
            f"{twin.base_url}/serverless/{twin.endpoint_id}",
            json={"workers": {"min": 1, "max": 1}},
            headers={"Authorization": f"Bearer {twin.api_key}"},
        )
        assert response.json()["workers"] == {"min": 1, "max": 1, "idleTimeout": 600}
        seen: list[int] = []

        def one_left() -> bool:
            active = [r for r in twin.platform.pool.workers.values() if r.state != "stopping"]
            seen.append(len(active))
            return len(twin.platform.pool.workers) == 1

        wait_until(one_left, 20, "two workers to stop")
        assert min(seen) == 1
        with twin.client() as api:
            assert api.post("/runsync", json={"input": {}}).json()["status"] == "COMPLETED"
