"""Twin benchmarks: dispatch overhead, throughput, and client-side overhead.

Run: ``.venv/bin/python benchmarks/twin.py`` (or ``make bench``). Everything runs on
loopback against real runpod SDK worker processes; the figures are printed side by side
in one run because these machines are noisy.

1. Dispatch: sequential /runsync at c=1 with warm idle workers. delayTime as RunPod reports
   it (whole ms) and the twin's exact queue-to-take time, P50/P99.
2. Overhead: client-measured total minus the handler's own time, split into twin dispatch,
   the SDK worker's pick-up and result post, and the HTTP round trip.
3. Throughput: a no-op handler on 1 and on 2 workers (twin in its own process, so the
   load generator does not share its GIL), jobs/s and the 2-vs-1 ratio. Workers run with
   WORKER_MAX_CONCURRENCY=1000: the runpod SDK sleeps a full second whenever a worker is at
   its concurrency limit, which would cap a no-op worker at ``concurrency`` jobs/s.
4. Start and stop: ``running_twin`` entered and left with warm workers, idle and right after
   a job (a worker that took a job within the last second sits out the SDK's one-second pause
   before it sees SIGTERM, so ``TWIN_STOP_GRACE_S`` bounds that case).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from podpulse.common.net import free_port
from podpulse.common.testing import wait_until
from podpulse.twin import DEFAULT_API_KEY, CalibratedSettings, TwinSettings, running_twin

PODPULSE = str(Path(sys.executable).with_name("podpulse"))


def no_op_twin(workers: int, concurrency: int, stop_grace_s: float = 1.5) -> TwinSettings:
    """Warm workers, each taking ``concurrency`` jobs at once."""
    return TwinSettings(
        workers_min=workers,
        workers_max=workers,
        worker_concurrency=concurrency,
        stop_grace_s=stop_grace_s,
    )


def no_op() -> CalibratedSettings:
    """A calibrated handler that returns at once."""
    return CalibratedSettings(exec_ms=0.0, distribution="fixed")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the method podpulse uses everywhere)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def dispatch_and_overhead(samples: int) -> None:
    """Sections 1 and 2."""
    settings = no_op_twin(2, 2)
    with (
        running_twin(settings, no_op()) as twin,
        twin.client() as api,
    ):
        for _ in range(20):  # warm connections and code paths
            api.post("/runsync", json={"input": {}})
        reported, exact, total, handler, execution = [], [], [], [], []
        for _ in range(samples):
            # The SDK worker parks a fresh job-take right after its last job; wait for it
            # so every sample starts with an idle warm worker, as the goal defines.
            wait_until(lambda: twin.platform.queue.waiting_takers() >= 1, 10)
            sent = time.perf_counter()
            body = api.post("/runsync", json={"input": {}}).json()
            total.append((time.perf_counter() - sent) * 1000)
            job = twin.platform.queue.jobs[body["id"]]
            assert job.started_at is not None
            assert job.finished_at is not None
            reported.append(body["delayTime"])
            exact.append((job.started_at - job.created_at) * 1000)
            execution.append((job.finished_at - job.started_at) * 1000)
            handler.append(body["output"]["timings"]["handler_ms"])
    print(f"\n1. dispatch at c=1, warm idle workers ({samples} sequential /runsync)")
    print(f"   {'':34}{'P50':>9}{'P99':>9}")
    print(f"   {'delayTime as reported (ms)':34}{pct(reported, 50):9.0f}{pct(reported, 99):9.0f}")
    print(f"   {'queue-to-take, exact (ms)':34}{pct(exact, 50):9.3f}{pct(exact, 99):9.3f}")
    print(f"   goal P50 <= 5 ms: {pct(exact, 50) / 5:.3f} of the budget")
    overhead = [t - h for t, h in zip(total, handler, strict=True)]
    sdk = [e - h for e, h in zip(execution, handler, strict=True)]
    wire = [t - d - e for t, d, e in zip(total, exact, execution, strict=True)]
    print("\n2. client total vs the handler's own time (no-op handler)")
    print(f"   {'':34}{'P50':>9}{'P99':>9}{'mean':>9}")
    for name, values in (
        ("total - handler (ms)", overhead),
        ("  twin dispatch (ms)", exact),
        ("  SDK pick-up + result post (ms)", sdk),
        ("  HTTP client<->twin (ms)", wire),
    ):
        print(
            f"   {name:34}{pct(values, 50):9.2f}{pct(values, 99):9.2f}"
            f"{statistics.fmean(values):9.2f}"
        )


async def _drive(url: str, jobs: int, in_flight: int) -> float:
    # aiohttp, not httpx, drives the load: at hundreds of requests in flight httpx's pool
    # spends several ms of CPU per request here and the client would be what is measured.
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(url + "/", headers=headers, connector=connector) as c:
        async with c.get("health") as response:
            base = (await response.json())["jobs"]["completed"]
        remaining = jobs

        async def sender() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with c.post("runsync", json={"input": {}}) as response:
                    body = await response.json()
                    assert body["status"] == "COMPLETED", body

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
        async with c.get("health") as response:
            done = (await response.json())["jobs"]["completed"] - base
        assert done == jobs, f"{done} of {jobs} completed"
        return jobs / elapsed


def throughput(workers: int, jobs: int, in_flight: int) -> float:
    """Jobs/s for a no-op handler on ``workers`` workers, twin in its own process."""
    port = free_port()
    with tempfile.TemporaryDirectory() as logs:
        proc = subprocess.Popen(
            [PODPULSE, "twin", "serve", "--port", str(port), "--workers-min", str(workers),
             "--workers-max", str(workers), "--exec-ms", "0", "--concurrency", "1000",
             "--log-dir", logs],
            env={**os.environ, "TWIN_CALIBRATED_DISTRIBUTION": "fixed"},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/v2/podpulse-twin"
        try:
            headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}

            def ready() -> bool:
                try:
                    health = httpx.get(f"{url}/health", headers=headers).json()
                except httpx.TransportError:
                    return False
                return bool(health["workers"]["idle"] == workers)

            wait_until(ready, 60, "the twin's workers")
            time.sleep(1.0)  # let every SDK worker settle into its job-take long-poll
            asyncio.run(_drive(url, min(200, jobs), in_flight))  # warm-up
            return asyncio.run(_drive(url, jobs, in_flight))
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)


def start_and_stop(rounds: int, grace_s: float) -> None:
    """Section 4."""
    print(f"\n4. running_twin start and stop, 2 warm workers, stop grace {grace_s} s "
          f"(median of {rounds})")  # fmt: skip
    print(f"   {'':34}{'enter':>9}{'exit':>9}")
    for after_job in (False, True):
        enter, leave = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            with running_twin(no_op_twin(2, 1, stop_grace_s=grace_s), no_op()) as twin:
                entered = time.perf_counter()
                with twin.client() as api:
                    if after_job:
                        api.post("/runsync", json={"input": {}})
                    else:
                        # Idle: past the SDK's one-second pause after its last take.
                        time.sleep(1.2)
                left_at = time.perf_counter()
            enter.append(entered - started)
            leave.append(time.perf_counter() - left_at)
        name = "right after a job (s)" if after_job else "idle workers (s)"
        print(f"   {name:34}{statistics.median(enter):9.2f}{statistics.median(leave):9.2f}")


def main() -> None:
    """Run all sections with the sizes given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="sequential jobs for 1 and 2")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per throughput run")
    parser.add_argument("--in-flight", type=int, default=256, help="concurrent client requests")
    parser.add_argument("--rounds", type=int, default=5, help="twins started for section 4")
    parser.add_argument("--grace", type=float, default=1.5, help="stop grace for section 4 (s)")
    parser.add_argument("--only-stop", action="store_true", help="run section 4 only")
    args = parser.parse_args()
    print(f"podpulse twin benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    if args.only_stop:
        start_and_stop(args.rounds, args.grace)
        return
    dispatch_and_overhead(args.samples)
    one = throughput(1, args.jobs, args.in_flight)
    two = throughput(2, args.jobs, args.in_flight)
    print(f"\n3. throughput, no-op handler, {args.jobs} jobs, {args.in_flight} in flight")
    print(f"   1 worker : {one:8.0f} jobs/s")
    print(f"   2 workers: {two:8.0f} jobs/s   (2 vs 1: {two / one:.2f}x; goal >= 300: "
          f"{two / 300:.2f}x)")  # fmt: skip
    start_and_stop(args.rounds, args.grace)


if __name__ == "__main__":
    main()
