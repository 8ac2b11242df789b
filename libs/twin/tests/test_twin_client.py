"""podpulse.common.runpod's clients against the twin: the same calls as against RunPod."""

from __future__ import annotations

import asyncio

import pytest
from twin_helpers import calibrated, small

from podpulse.common.runpod import JobStatus, RunPodAuthError, RunPodClient, RunPodNotFound
from podpulse.twin import RunningTwin, running_twin


def test_client_round_trip_against_the_twin(twin: RunningTwin) -> None:
    """run/status/runsync/health/cancel come back typed with RunPod's timing fields."""

    async def scenario() -> None:
        async with RunPodClient(twin.endpoint_id, twin.api_key, base_url=twin.base_url) as rp:
            done = await rp.runsync({"exec_ms": 15})
            assert done.status is JobStatus.COMPLETED
            assert done.delay_time_ms is not None
            assert done.execution_time_ms is not None
            assert done.execution_time_ms >= 15
            assert done.worker_id is not None
            assert done.raw["output"]["model"] == "calibrated"
            queued = await rp.run({"exec_ms": 10_000})
            assert queued.status is JobStatus.IN_QUEUE
            cancelled = await rp.cancel(queued.id)
            assert cancelled.status is JobStatus.CANCELLED
            assert (await rp.status(queued.id)).status is JobStatus.CANCELLED
            health = await rp.health()
            assert health.jobs.completed >= 1
            with pytest.raises(RunPodNotFound):
                await rp.status("missing")
        async with RunPodClient(twin.endpoint_id, "wrong-key", base_url=twin.base_url) as bad:
            with pytest.raises(RunPodAuthError) as caught:
                await bad.health()
            assert "wrong-key" not in str(caught.value)

    asyncio.run(scenario())


def test_purge_queue_drops_waiting_jobs_only() -> None:
    """/purge-queue removes queued jobs; the running one completes."""
    with running_twin(small(scaler_value=60), calibrated()) as twin:

        async def scenario() -> None:
            async with RunPodClient(twin.endpoint_id, twin.api_key, base_url=twin.base_url) as rp:
                first = await rp.run({"exec_ms": 1500})
                waiting = [await rp.run({"exec_ms": 1500}) for _ in range(3)]
                # The first is taken by the one worker; the others wait in the queue.
                while (await rp.status(first.id)).status is not JobStatus.IN_PROGRESS:
                    await asyncio.sleep(0.05)
                purged = await rp.purge_queue()
                assert purged.removed == 3
                assert (await rp.health()).jobs.in_queue == 0
                for job in waiting:
                    with pytest.raises(RunPodNotFound):
                        await rp.status(job.id)
                while not (await rp.status(first.id)).status.is_final:
                    await asyncio.sleep(0.05)
                assert (await rp.status(first.id)).status is JobStatus.COMPLETED

        asyncio.run(scenario())
