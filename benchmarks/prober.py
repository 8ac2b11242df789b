"""Prober benchmarks: measurement error, and the request rate one prober process sustains.

Run: ``.venv/bin/python benchmarks/prober.py``. Everything runs on loopback against real
runpod SDK worker processes; the figures are printed side by side in one run, with their
ratio to the goal, because these machines are noisy.

1. Measurement error. The prober (closed loop, c=1) against an in-process twin running the
   calibrated handler. Server-side truth is the twin's own clock for the job: from queueing
   (``created_at``) to the result (``finished_at``), i.e. twin dispatch + execution. The
   error is the prober's total minus that. Goal: P99 within 2 ms.
2. Sustained rate. Open loop at a constant rate against a no-op twin in its own process (so
   the prober does not share its GIL), each rate for a few seconds: schedule lag (sent -
   intended) P50/P99 and the completion rate. The highest rate with lag P99 <= 5 ms, no
   failures and completions keeping up is what one prober process sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from podpulse.common.histogram import percentile
from podpulse.common.net import free_port
from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.testing import wait_until
from podpulse.prober import Clock, Engine, Load, RequestOptions, Target
from podpulse.twin import DEFAULT_API_KEY, CalibratedSettings, TwinSettings, running_twin

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
ERROR_GOAL_MS = 2.0
LAG_GOAL_MS = 5.0


def _pct(values: list[float], q: float) -> float:
    result = percentile(values, q)
    assert result is not None
    return result


Legs = dict[str, list[float]]


async def _measure(target: Target, jobs: dict[str, Any], samples: int, exec_ms: float) -> Legs:
    """The prober's error per request, split into its request and response legs (ms)."""
    clock = Clock()
    legs: Legs = {"error": [], "request": [], "response": []}

    def on_record(record: RequestRecord) -> None:
        # Read the twin's own timestamps at once: its job table forgets runsync jobs later.
        assert record.ok, record.error
        assert record.job_id is not None
        job = jobs[record.job_id]
        truth = (job.finished_at - job.created_at) * 1000
        legs["error"].append(record.total_ms - truth)
        # time.monotonic and perf_counter are both CLOCK_MONOTONIC here, so they compare.
        legs["request"].append((job.created_at - clock.to_perf(record.intended)) * 1000)
        legs["response"].append((clock.to_perf(record.done) - job.finished_at) * 1000)

    async with target.client(timeout_s=30) as client:
        engine = Engine(
            client,
            run_id="bench",
            make_input=lambda seq: {"exec_ms": exec_ms},
            on_record=on_record,
            clock=clock,
        )
        await engine.run(Load(concurrency=1, runs=samples, warmup=20))
    return legs


async def _reference(target: Target, jobs: dict[str, Any], samples: int, exec_ms: float) -> Legs:
    """The same round trip with bare aiohttp and no parsing: the floor on this machine."""
    legs: Legs = {"error": [], "request": [], "response": []}
    url = f"{target.base_url}/{target.endpoint_id}/runsync"
    headers = {"Authorization": f"Bearer {target.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for n in range(samples + 20):
            sent = time.perf_counter()
            async with session.post(
                url, params={"wait": "30000"}, json={"input": {"exec_ms": exec_ms}}
            ) as response:
                body = await response.json()
            done = time.perf_counter()
            job = jobs[body["id"]]
            if n >= 20:
                truth = (job.finished_at - job.created_at) * 1000
                legs["error"].append((done - sent) * 1000 - truth)
                legs["request"].append((job.created_at - sent) * 1000)
                legs["response"].append((done - job.finished_at) * 1000)
    return legs


def measurement_error(samples: int, exec_ms: float) -> tuple[Legs, Legs]:
    """Section 1: prober total minus the twin's dispatch + execution, and the aiohttp floor."""
    settings = TwinSettings(workers_min=2, workers_max=2, worker_concurrency=4)
    calibrated = CalibratedSettings(exec_ms=exec_ms, distribution="fixed")
    with running_twin(settings, calibrated) as twin:
        target = Target(twin.endpoint_id, twin.base_url, twin.api_key, "twin")
        jobs = twin.platform.queue.jobs
        prober = asyncio.run(_measure(target, jobs, samples, exec_ms))
        floor = asyncio.run(_reference(target, jobs, samples, exec_ms))
    return prober, floor


async def _open_loop(target: Target, rate: float, seconds: float) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    options = RequestOptions(timeout_s=30)
    async with target.client(timeout_s=30) as client:
        engine = Engine(
            client, run_id="rate", make_input=lambda seq: {}, options=options,
            on_record=records.append,
        )  # fmt: skip
        # Warm the connection pool at a third of the rate first, unmeasured.
        await engine.run(Load(arrival="constant", rate=rate / 3, duration_s=1.0, concurrency=0))
        records.clear()
        await engine.run(Load(arrival="constant", rate=rate, duration_s=seconds, concurrency=0))
    return records


def sustained_rate(rates: list[float], seconds: float) -> list[tuple[float, list[RequestRecord]]]:
    """Section 2: open loop at each rate against a no-op twin in its own process."""
    port = free_port()
    results = []
    with tempfile.TemporaryDirectory() as logs:
        proc = subprocess.Popen(
            [PODPULSE, "twin", "serve", "--port", str(port), "--workers-min", "2",
             "--workers-max", "2", "--exec-ms", "0", "--concurrency", "1000",
             "--log-dir", logs],
            env={**os.environ, "TWIN_CALIBRATED_DISTRIBUTION": "fixed"},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}/v2"
        target = Target("podpulse-twin", base, DEFAULT_API_KEY, "twin")
        try:
            headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}

            def ready() -> bool:
                try:
                    health = httpx.get(f"{base}/podpulse-twin/health", headers=headers).json()
                except httpx.TransportError:
                    return False
                return bool(health["workers"]["idle"] == 2)

            wait_until(ready, 60, "the twin's workers")
            time.sleep(1.0)
            for rate in rates:
                results.append((rate, asyncio.run(_open_loop(target, rate, seconds))))
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
    return results


def main() -> None:
    """Run both sections and print them with their goal ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="requests for section 1")
    parser.add_argument("--exec-ms", type=float, default=50, help="calibrated execution time")
    parser.add_argument(
        "--rates", default="25,50,100,150,200,300", help="open-loop rates for section 2 (req/s)"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each rate")
    args = parser.parse_args()
    print(f"podpulse prober benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")

    prober, floor = measurement_error(args.samples, args.exec_ms)
    print(
        f"\n1. measurement error: prober total - twin (dispatch + execution), "
        f"{args.samples} requests at c=1, calibrated {args.exec_ms:g} ms, twin in-process"
    )
    print(f"   {'(ms)':44}{'P50':>8}{'P99':>8}{'max':>8}{'P99/2ms':>9}")
    for name, legs in (
        ("prober (RunPodClient, httpx over aiohttp)", prober),
        ("bare aiohttp, same twin", floor),
    ):
        for leg in ("error", "request", "response"):
            values = legs[leg]
            label = f"{name}: {leg}" if leg == "error" else f"  {leg} leg"
            ratio = f"{_pct(values, 99) / ERROR_GOAL_MS:9.2f}" if leg == "error" else ""
            print(
                f"   {label:44}{_pct(values, 50):8.2f}{_pct(values, 99):8.2f}"
                f"{max(values):8.2f}{ratio}"
            )
    print(
        f"   prober P99 / bare-aiohttp P99: "
        f"{_pct(prober['error'], 99) / _pct(floor['error'], 99):.2f}x"
    )

    rates = [float(r) for r in args.rates.split(",")]
    print(f"\n2. open loop, constant rate, no-op twin in its own process, {args.seconds:g} s each")
    print(
        f"   {'rate (req/s)':>14}{'sent':>7}{'failed':>8}{'done/s':>9}"
        f"{'lag P50':>9}{'lag P99':>9}{'P99/5ms':>9}{'total P50':>11}"
    )
    best = None
    for rate, records in sustained_rate(rates, args.seconds):
        lags = [r.schedule_lag_ms for r in records]
        failed = sum(1 for r in records if r.outcome is not Outcome.OK)
        span = max(r.done for r in records) - min(r.intended for r in records)
        done_rate = (len(records) - failed) / span
        lag99 = _pct(lags, 99)
        totals = [r.total_ms for r in records if r.ok]
        print(
            f"   {rate:14g}{len(records):7d}{failed:8d}{done_rate:9.1f}{_pct(lags, 50):9.2f}"
            f"{lag99:9.2f}{lag99 / LAG_GOAL_MS:9.2f}{_pct(totals, 50) if totals else 0:11.1f}"
        )
        if lag99 <= LAG_GOAL_MS and failed == 0 and done_rate >= 0.9 * rate:
            best = rate
    print(
        f"   highest rate sustained with lag P99 <= {LAG_GOAL_MS:g} ms, no failures, "
        f"completions >= 90% of the rate: {best if best is not None else 'none'} req/s"
    )


if __name__ == "__main__":
    main()
