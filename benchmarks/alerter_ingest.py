"""Alerter ingest benchmark: OTLP spans/s on one core, protobuf and JSON side by side.

Run: ``.venv/bin/python benchmarks/alerter_ingest.py [--batches N] [--out FILE]``. Every
batch is 512 ``runpod.job`` spans with the prober's attributes (one ResourceSpans, as the
SDK's BatchSpanProcessor sends them), spread over 300 endpoints' worth of time buckets. Two
paths:

- **decode + window**: in this process, the ingest app's decoding, span reader and
  ``MemoryWindowStore.add`` for each body; spans/s by CPU time of this (single-threaded)
  process, so a busy machine does not count against it;
- **HTTP on loopback**: a uvicorn ingest app (in-memory windows) in a child process pinned to
  one core, fed by 4 keep-alive clients in this process; spans/s by the wall clock.

Goal >= 50,000 spans/s (first bar 20,000) on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import time
from pathlib import Path

import httpx

from podpulse.alerter import MemoryWindowStore, create_ingest_app
from podpulse.alerter._ingest._http import ingest
from podpulse.alerter._ingest._otlp import decode_json, decode_protobuf
from podpulse.alerter._ingest._reader import SpanReader
from podpulse.alerter.settings import AlerterSettings
from podpulse.common.settings import Secret
from podpulse.common.testing import free_port, wait_until

BATCH = 512
_CLIENTS = 4


def _bodies(now: float) -> tuple[bytes, bytes]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "services/alerter/tests"))
    from ingest_helpers import SpanSpec, job_attrs, json_body, proto_request

    specs = [
        SpanSpec(
            {
                **job_attrs(
                    f"ep{i % 4}",
                    exec_ms=800.0 + i * 7.3,
                    delay_ms=i * 1.1,
                    total_ms=1500.0 + i * 9.1,
                    tokens_per_s=30.0 + i % 20,
                ),
                "runpod.worker.id": "w-1",
                "podpulse.probe.run_id": "run-1",
                "podpulse.probe.kind": "load",
                "podpulse.probe.concurrency": 4,
                "podpulse.probe.outcome": "ok",
                "gen_ai.usage.input_tokens": 120,
            },
            end_s=now - (i % 300),
        )
        for i in range(BATCH)
    ]
    request = proto_request(specs)
    # One ResourceSpans holding every span, as an SDK exporter sends a batch.
    first = request.resource_spans[0]
    for rs in request.resource_spans[1:]:
        first.scope_spans[0].spans.extend(rs.scope_spans[0].spans)
    del request.resource_spans[1:]
    return request.SerializeToString(), json_body(request)


def _decode_window(body: bytes, as_json: bool, batches: int, now: float) -> float:
    store = MemoryWindowStore(bucket_s=10, retention_s=3600, max_series=1000, clock=lambda: now)
    reader = SpanReader(retention_s=3600, max_clock_skew_s=60)
    decode = decode_json if as_json else decode_protobuf
    start = time.process_time()
    for _ in range(batches):
        rejected = ingest(decode(body), reader, store, now)
        assert not rejected, rejected[:1]
    return batches * BATCH / (time.process_time() - start)


def _serve(port: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import uvicorn

    settings = AlerterSettings()
    store = MemoryWindowStore(bucket_s=10, retention_s=3600, max_series=1000, clock=time.time)
    app = create_ingest_app(settings, store, token=Secret("ALERTER_BENCH_NO_TOKEN"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _http(url: str, body: bytes, content_type: str, batches: int) -> float:
    headers = {"content-type": content_type}
    per_client = max(batches // _CLIENTS, 1)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def run(n: int) -> None:
            for _ in range(n):
                reply = await client.post("/v1/traces", content=body, headers=headers)
                assert reply.status_code == 200, reply.text
                assert b"partial" not in reply.content.lower(), reply.content[:200]

        await asyncio.gather(*(run(2) for _ in range(_CLIENTS)))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(run(per_client) for _ in range(_CLIENTS)))
        return per_client * _CLIENTS * BATCH / (time.perf_counter() - start)


def main() -> None:
    """Measure both paths for both encodings and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches of 512 per figure")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/reports/alerter_ingest_cpu2.txt")
    )
    args = parser.parse_args()
    now = time.time()
    proto, js = _bodies(now)
    lines = [
        f"podpulse alerter ingest benchmark: {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}",
        f"batches of {BATCH} runpod.job spans; protobuf body {len(proto)} B, JSON {len(js)} B; "
        f"{args.batches} batches per figure",
        "",
        f"{'path':<28}{'protobuf spans/s':>18}{'JSON spans/s':>16}",
    ]
    print("\n".join(lines), flush=True)
    row = (
        f"{'decode + window (CPU s)':<28}"
        f"{_decode_window(proto, False, args.batches, now):>18,.0f}"
        f"{_decode_window(js, True, args.batches, now):>16,.0f}"
    )
    print(row, flush=True)
    lines.append(row)
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), timeout_s=30, what="the ingest app")
        pb = asyncio.run(_http(url, proto, "application/x-protobuf", args.batches))
        jr = asyncio.run(_http(url, js, "application/json", args.batches))
    finally:
        server.terminate()
        server.join(10)
    row = f"{'HTTP loopback, 1 core (wall)':<28}{pb:>18,.0f}{jr:>16,.0f}"
    print(row, flush=True)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    lines += [
        row,
        "",
        f"load average at the end (1/5/15 min): {load} (wall figures share the "
        "machine; CPU figures do not)",
        "goal >= 50,000 spans/s on one core (first bar 20,000)",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/healthy", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
