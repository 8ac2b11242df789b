"""The load engine against a real twin with real SDK workers (429s against a mock transport)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
import pytest

from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.runpod import Backoff, RunPodClient
from podpulse.prober import Engine, Load, RequestOptions, Target
from podpulse.prober._load import arrivals
from podpulse.twin import CalibratedSettings, TwinSettings, running_twin


def _engine(client: RunPodClient, records: list[RequestRecord], exec_ms: float = 30, **kw):
    return Engine(
        client,
        run_id="engine-test",
        make_input=lambda seq: {"exec_ms": exec_ms},
        on_record=records.append,
        **kw,
    )


async def test_closed_loop_sends_n_runs_each_slot_due_when_its_last_ended(twin_target: Target):
    """Closed loop: N measured requests; a slot's next intended start is its last done time."""
    records: list[RequestRecord] = []
    async with twin_target.client(timeout_s=10) as client:
        await _engine(client, records).run(Load(concurrency=2, runs=8))
    assert sorted(r.seq for r in records) == list(range(8))
    assert all(r.outcome is Outcome.OK for r in records)
    for r in records:
        assert r.delay_ms is not None
        assert r.exec_ms is not None
        assert r.exec_ms >= 30
        assert r.intended <= r.sent <= r.done
        # total covers queue and execution (RunPod rounds each to whole ms)
        assert r.total_ms >= r.delay_ms + r.exec_ms - 2
    dones = {r.done for r in records}
    chained = [r for r in records if r.intended in dones]
    assert len(chained) == 8 - 2  # all but each slot's first request


async def test_open_loop_constant_rate_keeps_the_schedule_and_records_lag(twin_target: Target):
    """Constant arrivals: intended starts exactly 1/rate apart; lateness is recorded as lag."""
    records: list[RequestRecord] = []
    async with twin_target.client(timeout_s=10) as client:
        await _engine(client, records).run(
            Load(arrival="constant", rate=40, runs=12, concurrency=0)
        )
    intended = sorted(r.intended for r in records)
    gaps = [b - a for a, b in itertools.pairwise(intended)]
    assert all(abs(gap - 0.025) < 1e-6 for gap in gaps)
    assert all(r.outcome is Outcome.OK for r in records)
    lags = [r.schedule_lag_ms for r in records]
    assert all(lag >= 0 for lag in lags)
    # Each send is late by far less than ten 25 ms slots; a tighter bound only measures how
    # loaded the machine running four test workers is.
    assert max(lags) < 250


async def test_open_loop_poisson_follows_the_seeded_schedule(twin_target: Target):
    """Poisson arrivals: intended starts follow the seeded exponential gaps, not a fixed step."""
    records: list[RequestRecord] = []
    load = Load(arrival="poisson", rate=40, runs=10, seed=7, concurrency=0)
    async with twin_target.client(timeout_s=10) as client:
        await _engine(client, records).run(load)
    first = min(r.intended for r in records)
    expected = [offset for _, offset in itertools.islice(arrivals(load), 10)]
    got = sorted(r.intended - first for r in records)
    assert got == pytest.approx([e - expected[0] for e in expected], abs=1e-6)
    gaps = [b - a for a, b in itertools.pairwise(got)]
    assert max(gaps) > 2 * min(gaps)


def test_sharded_arrivals_together_are_the_unsharded_schedule():
    """Shard i of k takes every k-th arrival: the shards' union is the whole schedule."""
    whole = list(itertools.islice(arrivals(Load(arrival="poisson", rate=5, runs=9, seed=3)), 9))
    parts = [
        list(
            itertools.islice(
                arrivals(Load(arrival="poisson", rate=5, runs=9, seed=3, index=i, step=3)), 3
            )
        )
        for i in range(3)
    ]
    assert sorted(itertools.chain(*parts)) == whole


async def test_warmup_requests_are_sent_but_not_reported(twin_target: Target):
    """Warm-up requests run first and stay out of the reported records."""
    records: list[RequestRecord] = []
    async with twin_target.client(timeout_s=10) as client:
        result = await _engine(client, records).run(Load(concurrency=1, runs=3, warmup=2))
    assert [r.seq for r in records] == [0, 1, 2]
    assert [r.seq for r in result.warmup_records] == [-1, -2]
    assert all(r.outcome is Outcome.OK for r in result.warmup_records)
    assert min(r.intended for r in records) >= max(r.done for r in result.warmup_records)


async def test_policy_execution_timeout_is_counted_as_timed_out(twin_target: Target):
    """A job over policy.executionTimeout ends TIMED_OUT, with RunPod's reason."""
    records: list[RequestRecord] = []
    options = RequestOptions(timeout_s=10, policy={"executionTimeout": 300})
    async with twin_target.client(timeout_s=10) as client:
        engine = _engine(client, records, exec_ms=1500, options=options)
        await engine.run(Load(runs=1))
    [record] = records
    assert record.outcome is Outcome.TIMED_OUT
    assert record.error is not None
    assert "executionTimeout" in record.error


async def test_client_timeout_is_counted_and_measured_to_the_timeout(twin_target: Target):
    """A request past the client timeout is CLIENT_TIMEOUT, its total about the timeout."""
    records: list[RequestRecord] = []
    options = RequestOptions(timeout_s=0.3)
    async with twin_target.client(timeout_s=10) as client:
        await _engine(client, records, exec_ms=10_000, options=options).run(Load(runs=1))
    [record] = records
    assert record.outcome is Outcome.CLIENT_TIMEOUT
    assert "client timeout" in (record.error or "")
    # The job runs 10 s: a total below that was measured to the timeout, not to the job's end
    # (a bound nearer the timeout would only measure how loaded the machine is).
    assert 300 <= record.total_ms < 10_000


async def test_unfinished_runsync_is_polled_at_a_short_interval(twin_target: Target):
    """/runsync that returns unfinished is followed by /status polls; total stays exact."""
    calls: list[str] = []

    async def count(request: httpx.Request) -> None:
        calls.append(request.url.path.split("/")[3])

    options = RequestOptions(timeout_s=10, wait_ms=1000, poll_interval_s=0.02)
    records: list[RequestRecord] = []
    async with (
        httpx.AsyncClient(event_hooks={"request": [count]}) as http,
        RunPodClient(
            twin_target.endpoint_id,
            twin_target.api_key,
            base_url=twin_target.base_url,
            client=http,
            max_retries=0,
        ) as client,
    ):
        await _engine(client, records, exec_ms=3000, options=options).run(Load(runs=1))
    [record] = records
    assert record.outcome is Outcome.OK
    assert calls[0] == "runsync"
    # Two seconds of polling after the 1 s /runsync: at most three polls at the SDK's own
    # once-a-second run_sync interval, dozens at 20 ms (even at a loaded machine's pace).
    assert calls.count("status") >= 6, calls
    assert record.overhead_ms is not None


async def test_wrong_key_is_an_http_error_with_its_reason(twin_target: Target):
    """A rejected key counts as HTTP_ERROR and says why."""
    bad = Target(twin_target.endpoint_id, twin_target.base_url, "wrong-key", "twin")
    records: list[RequestRecord] = []
    async with bad.client(timeout_s=5) as client:
        await _engine(client, records).run(Load(runs=2))
    assert [r.outcome for r in records] == [Outcome.HTTP_ERROR] * 2
    assert "API key was rejected" in (records[0].error or "")


async def test_worker_crash_mid_run_is_a_failure_and_the_run_goes_on():
    """A worker dying mid-job fails that job with the exit reason; the other requests complete."""
    twin_settings = TwinSettings(workers_min=2, workers_max=2, stop_grace_s=0.3)
    calibrated = CalibratedSettings(exec_ms=30, distribution="fixed")
    with running_twin(twin_settings, calibrated) as twin:
        target = Target(twin.endpoint_id, twin.base_url, twin.api_key, "twin")
        records: list[RequestRecord] = []
        async with target.client(timeout_s=20) as client:
            engine = Engine(
                client,
                run_id="crash",
                make_input=lambda seq: {"exec_ms": 100, "crash": seq == 1},
                on_record=records.append,
            )
            await engine.run(Load(concurrency=1, runs=4))
    by_seq = {r.seq: r for r in records}
    assert by_seq[1].outcome is Outcome.FAILED
    assert "exited with code 17" in (by_seq[1].error or "")
    assert [by_seq[s].outcome for s in (0, 2, 3)] == [Outcome.OK] * 3


def _mock_client(responses: list[httpx.Response]) -> RunPodClient:
    replies = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        return next(replies)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return RunPodClient("ep", "key", base_url="http://runpod.test/v2", client=http, max_retries=0)


_DONE = {"id": "j1", "status": "COMPLETED", "delayTime": 5, "executionTime": 40, "output": {}}


async def test_429_backs_off_and_is_counted_apart():
    """429s are retried after Retry-After and counted on the request, which then completes."""
    limited = httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "slow down"})
    client = _mock_client([limited, limited, httpx.Response(200, json=_DONE)])
    records: list[RequestRecord] = []
    await _engine(client, records).run(Load(runs=1))
    [record] = records
    assert record.outcome is Outcome.OK
    assert record.rate_limited == 2


async def test_429_past_the_retries_is_rate_limited_with_backoff():
    """Without Retry-After the back-off grows; past the retries the request is RATE_LIMITED."""
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    client = _mock_client([httpx.Response(429, json={})] * 4)
    options = RequestOptions(
        rate_limit_retries=3, backoff=Backoff(base_s=0.1, sleep=no_sleep, jitter=lambda: 1.0)
    )
    records: list[RequestRecord] = []
    await _engine(client, records, options=options).run(Load(runs=1))
    [record] = records
    assert record.outcome is Outcome.RATE_LIMITED
    assert record.rate_limited == 4
    assert waits == pytest.approx([0.1, 0.2, 0.4])


async def test_cancel_stops_the_run_promptly(twin_target: Target, tmp_path: Path):
    """Cancelling a run's task ends it within a moment, with the finished records reported."""
    records: list[RequestRecord] = []
    async with twin_target.client(timeout_s=10) as client:
        engine = _engine(client, records, exec_ms=100)
        task = asyncio.create_task(engine.run(Load(concurrency=2, runs=100)))
        while len(records) < 3:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 3)
    assert 3 <= len(records) < 100


async def test_refused_connection_is_an_http_error(tmp_path: Path):
    """Nothing listening: the request ends HTTP_ERROR saying the connection failed."""
    from podpulse.common.testing import free_port

    dead = Target("ep", f"http://127.0.0.1:{free_port()}/v2", "key", "hosted")
    records: list[RequestRecord] = []
    async with dead.client(timeout_s=5) as client:
        await _engine(client, records).run(Load(runs=1))
    [record] = records
    assert record.outcome is Outcome.HTTP_ERROR
    assert "connection failed" in (record.error or "")


async def test_a_late_shard_counts_its_delay_from_the_shared_start():
    """Open loop with start_at already past (warm-up overran it): the schedule still counts
    from start_at, so the delay is schedule lag and part of every total."""
    client = _mock_client([httpx.Response(200, json=_DONE)] * 2)
    records: list[RequestRecord] = []
    engine = _engine(client, records)
    start_at = engine.clock.now() - 0.5
    await engine.run(Load(arrival="constant", rate=100, runs=2, concurrency=0), start_at=start_at)
    assert engine.started_at == start_at
    assert sorted(r.intended - start_at for r in records) == pytest.approx([0.005, 0.015], abs=1e-6)
    assert all(r.schedule_lag_ms >= 480 and r.total_ms >= 480 for r in records)
