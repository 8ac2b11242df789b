"""Job-loop benchmark: the runpod SDK's stock loop against podpulse's fast loop, side by side.

Run: ``.venv/bin/python benchmarks/job_loop.py [--jobs N] [--out FILE]``. Each level starts a
twin on loopback with real worker processes running the calibrated handler (fixed time), once
with ``--job-loop sdk`` and once with ``--job-loop fast``, and every client sends ``/runsync``
requests back to back (closed loop):

- 1 worker at concurrency 1, 1 client;
- 1 worker at concurrency 2, 2 clients;
- 2 workers at concurrency 2, 4 clients;

each with 50 ms and 500 ms jobs. A slot is free for every client at every level, so the
queue delay is the job loop's alone. Last, an idle fast worker's share of a core while it
sits parked between jobs (goal: under 2 %). Reported: delayTime P50/P95, executionTime minus the
handler's own time (the loop's pick-up and result post) P50/P95, client total P50/P95 and
jobs/s, with the ratio stock/fast. Goals: delay P50 <= 5 ms and execution overhead <= 5 ms
at every level, and at least 10x less queue delay than the stock loop at concurrency 1.
Percentiles are nearest-rank, as everywhere in podpulse.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from podpulse.common.process import JobLoop
from podpulse.twin import CalibratedSettings, RunningTwin, TwinSettings, running_twin

LEVELS = [(1, 1, 1), (1, 2, 2), (2, 2, 4)]  # workers, concurrency per worker, clients
HANDLER_MS = [50, 500]
LOOPS: list[JobLoop] = ["sdk", "fast"]
WARM_UP = 2  # jobs per client before measuring


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the method podpulse uses everywhere)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class Cell:
    """One loop at one level and handler time."""

    delay: list[float]
    overhead: list[float]
    total: list[float]
    jobs_per_s: float

    def figures(self) -> list[float]:
        return [
            pct(self.delay, 50),
            pct(self.delay, 95),
            pct(self.overhead, 50),
            pct(self.overhead, 95),
            pct(self.total, 50),
            pct(self.total, 95),
            self.jobs_per_s,
        ]


async def _client(
    twin: RunningTwin, exec_ms: int, jobs: int, into: list[tuple[dict[str, Any], float]]
) -> None:
    async with httpx.AsyncClient(
        base_url=twin.endpoint_url,
        headers={"Authorization": f"Bearer {twin.api_key}"},
        timeout=120,
    ) as api:
        for index in range(WARM_UP + jobs):
            sent = time.perf_counter()
            body = (await api.post("/runsync", json={"input": {"exec_ms": exec_ms}})).json()
            total_ms = (time.perf_counter() - sent) * 1000
            if body.get("status") != "COMPLETED":
                raise RuntimeError(f"job did not complete: {body}")
            if index >= WARM_UP:
                into.append((body, total_ms))


def measure(twin: RunningTwin, clients: int, exec_ms: int, jobs: int) -> Cell:
    """``clients`` closed-loop clients, ``jobs`` measured jobs each."""
    results: list[tuple[dict[str, Any], float]] = []

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_client(twin, exec_ms, jobs, results) for _ in range(clients)))
        return time.perf_counter() - started

    wall_s = asyncio.run(run())
    # Warm-up jobs are inside the wall time too; count them so jobs/s stays honest.
    rate = clients * (WARM_UP + jobs) / wall_s
    return Cell(
        delay=[body["delayTime"] for body, _ in results],
        overhead=[
            body["executionTime"] - body["output"]["timings"]["handler_ms"] for body, _ in results
        ],
        total=[total for _, total in results],
        jobs_per_s=rate,
    )


IDLE_S = 3.0  # how long the idle worker's CPU time is measured


def idle_cpu_share() -> float:
    """A fast worker's CPU time per wall second while parked between jobs."""
    settings = TwinSettings(workers_min=1, workers_max=1, job_loop="fast")
    with running_twin(settings, CalibratedSettings(exec_ms=50, distribution="fixed")) as twin:
        with twin.client() as api:
            api.post("/runsync", json={"input": {}})
        [record] = twin.platform.pool.workers.values()
        assert record.process is not None
        worker = psutil.Process(record.process.pid)
        time.sleep(1)  # let the job's aftermath settle
        before, started = worker.cpu_times(), time.perf_counter()
        time.sleep(IDLE_S)
        after, wall = worker.cpu_times(), time.perf_counter() - started
    used = (after.user - before.user) + (after.system - before.system)
    return float(used / wall)


def _ratio(stock: float, fast: float) -> str:
    # delayTime is whole milliseconds: a fast figure of 0 means under 1 ms, so the ratio is at
    # least stock / 1 ms.
    if fast <= 0:
        return f"{'>=' + format(stock, '.0f') + 'x':>11}"
    return f"{stock / fast:>10.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24, help="measured jobs per client")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say(f"podpulse job-loop benchmark: {os.cpu_count()} CPUs, python {platform.python_version()}")
    say(
        f"{args.jobs} measured jobs per client after {WARM_UP} warm-up; calibrated handler, "
        "fixed time; all figures ms except jobs/s"
    )
    header = ["delay P50", "delay P95", "ovh P50", "ovh P95", "total P50", "total P95", "jobs/s"]
    cells: dict[tuple[JobLoop, int, int], Cell] = {}
    for workers, concurrency, clients in LEVELS:
        for loop in LOOPS:
            settings = TwinSettings(
                workers_min=workers,
                workers_max=workers,
                worker_concurrency=concurrency,
                job_loop=loop,
            )
            calibrated = CalibratedSettings(exec_ms=50, distribution="fixed")
            with running_twin(settings, calibrated) as twin:
                for exec_ms in HANDLER_MS:
                    cells[(loop, clients, exec_ms)] = measure(twin, clients, exec_ms, args.jobs)
        for exec_ms in HANDLER_MS:
            say()
            say(
                f"{workers} worker(s) x concurrency {concurrency}, {clients} client(s), "
                f"{exec_ms} ms handler"
            )
            say(f"  {'':<12}" + "".join(f"{name:>11}" for name in header))
            stock, fast = cells[("sdk", clients, exec_ms)], cells[("fast", clients, exec_ms)]
            for name, cell in (("stock (sdk)", stock), ("fast", fast)):
                say(f"  {name:<12}" + "".join(f"{v:>11.1f}" for v in cell.figures()))
            say(
                f"  {'stock/fast':<12}"
                + "".join(
                    _ratio(s, f) for s, f in zip(stock.figures(), fast.figures(), strict=True)
                )
            )
    say()
    say("stock/fast: how many times the stock loop's figure is the fast loop's (jobs/s 0.1x:")
    say("the stock loop ran a tenth as many jobs per second). ovh: executionTime minus the")
    say("handler's own time, the job loop's share of it.")
    say()
    say(
        "goals (fast loop): delay P50 <= 5 ms, overhead P50 <= 5 ms at every level; "
        ">= 10x less queue delay than stock at concurrency 1"
    )
    for (loop, clients, exec_ms), cell in cells.items():
        if loop == "fast":
            delay, overhead = pct(cell.delay, 50), pct(cell.overhead, 50)
            verdict = "met" if delay <= 5 and overhead <= 5 else "MISSED"
            say(
                f"  {clients} client(s), {exec_ms} ms: delay P50 {delay:.1f}, "
                f"overhead P50 {overhead:.1f} -> {verdict}"
            )
    for exec_ms in HANDLER_MS:
        stock, fast = cells[("sdk", 1, exec_ms)], cells[("fast", 1, exec_ms)]
        mean_stock = sum(stock.delay) / len(stock.delay)
        mean_fast = sum(fast.delay) / len(fast.delay)
        # delayTime is whole ms, so a fast loop's mean can be 0: compare with a 1 ms floor.
        ratio = mean_stock / max(mean_fast, 1.0)
        verdict = "met" if ratio >= 10 else "MISSED"
        say(
            f"  c=1 back to back, {exec_ms} ms: mean delay stock {mean_stock:.1f} / fast "
            f"{mean_fast:.1f} -> at least {ratio:.0f}x less ({verdict})"
        )
    share = idle_cpu_share()
    verdict = "met" if share < 0.02 else "MISSED"
    say(f"  idle fast worker, {IDLE_S:.0f} s parked: {share:.2%} of a core ({verdict}, goal < 2 %)")
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
