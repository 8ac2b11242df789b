"""A real Prometheus scrapes the ingest app's /metrics: the target is up, the statistics query."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alerter_helpers import program
from ingest_helpers import SpanSpec, job_attrs, proto_request, serve, settings

from podpulse.alerter import MemoryWindowStore, create_ingest_app
from podpulse.common.settings import Secret
from podpulse.common.testing import free_port, wait_until

BINARY, pytestmark = program("prometheus")

# Scraped every second, so the test is short; scrape_timeout may not exceed the interval.
CONFIG = """
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: podpulse-alerter
    static_configs: [{{targets: ["{target}"]}}]
"""


@pytest.fixture
def ingest() -> Iterator[str]:
    """The ingest app on in-memory windows, served by uvicorn on loopback; its base URL."""
    store = MemoryWindowStore(bucket_s=10, retention_s=3600, max_series=1000, clock=time.time)
    app = create_ingest_app(settings(), store, token=Secret("ALERTER_TEST_NO_TOKEN"))
    with serve(app) as base:
        yield base


@pytest.fixture
def prometheus(ingest: str, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the ingest app every second; its base URL."""
    assert BINARY is not None
    target = ingest.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(CONFIG.format(target=target))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([
        BINARY, f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
    ], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{base}/-/ready") is not None, timeout_s=60, what="prometheus")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_prometheus_parses_metrics_and_queries_windowed_exec(ingest, prometheus) -> None:
    """Prometheus scrapes /metrics as "up" and a query returns the window's exec P95 and count."""
    now = time.time()
    # 20 jobs, exec 1000..1190 ms: the nearest-rank P95 is the 19th, 1180 ms.
    specs = [SpanSpec(job_attrs("ep1", exec_ms=1000.0 + 10 * i), end_s=now) for i in range(20)]
    reply = httpx.post(f"{ingest}/v1/traces", content=proto_request(specs).SerializeToString(),
                       headers={"content-type": "application/x-protobuf"})  # fmt: skip
    assert reply.status_code == 200
    assert not reply.content  # no partial_success: every span counted

    targets = wait_until(lambda: _up(prometheus), timeout_s=30, what="target health up")
    assert targets[0]["scrapeUrl"] == f"{ingest}/metrics"
    assert targets[0]["lastError"] == ""

    p95 = wait_until(
        lambda: _query(prometheus, 'podpulse_exec_ms{quantile="0.95"}'), timeout_s=30,
        what="podpulse_exec_ms in Prometheus",
    )  # fmt: skip
    (series,) = p95
    assert series["metric"]["endpoint"] == "ep1"
    assert series["metric"]["model"] == "qwen"
    assert series["metric"]["job"] == "podpulse-alerter"
    assert float(series["value"][1]) == pytest.approx(1180, rel=0.01)
    samples = _query(prometheus, 'podpulse_window_samples{metric="exec_ms"}')
    assert samples is not None
    assert [float(s["value"][1]) for s in samples] == [20.0]
    # The counters parse too (the registry is per process, so other tests may have added).
    accepted = _query(prometheus, "podpulse_alerter_spans_accepted_total")
    assert accepted is not None
    assert float(accepted[0]["value"][1]) >= 20


def _get(url: str, **params: str) -> Any:
    try:
        reply = httpx.get(url, params=params, timeout=2)
    except httpx.HTTPError:
        return None
    return reply if reply.status_code == 200 else None


def _up(base: str) -> list[dict[str, Any]] | None:
    reply = _get(f"{base}/api/v1/targets")
    if reply is None:
        return None
    active = reply.json()["data"]["activeTargets"]
    return active if active and all(t["health"] == "up" for t in active) else None


def _query(base: str, expr: str) -> list[dict[str, Any]] | None:
    reply = _get(f"{base}/api/v1/query", query=expr)
    if reply is None:
        return None
    return reply.json()["data"]["result"] or None
