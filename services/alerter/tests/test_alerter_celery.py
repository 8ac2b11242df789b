"""The split alerter on real processes: `python -m podpulse.alerter worker -Q alerter,notify`
and `beat` (redbeat), a real redis-server, windows written as the ingest app writes them, bus
events published as the prober and tagger publish them, and a loopback v4 webhook."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from alerter_helpers import recorder

from podpulse.alerter import Observation, RedisWindowStore, SeriesKey
from podpulse.common.bus import create_celery_app
from podpulse.common.events import ProbeRunCompleted, ReleaseRecorded, publish
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import stop_process, wait_until

pytestmark = pytest.mark.slow

RULES = """
evaluation_interval: 1s
route: {group_wait: 1s, group_interval: 2s, repeat_interval: 1h}
rules:
  - name: ExecP95High
    metric: exec_ms
    stat: p95
    op: ">"
    threshold: 300
    window: 5s
    for: 2s
    min_samples: 5
    severity: critical
"""


@contextmanager
def alerter(*args: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m podpulse.alerter <args>`; SIGTERM (warm shutdown) when the block ends."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "podpulse.alerter", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield popen
    finally:
        stop_process(popen, timeout_s=20)


@contextmanager
def feeding(client: redis.Redis, exec_ms: list[float]) -> Iterator[None]:
    """Five jobs of ep1 every 0.25 s (exec_ms[0] each), flushed as the ingest app flushes them."""
    store = RedisWindowStore(
        client,
        prefix="podpulse:alerter:",
        bucket_s=1.0,
        retention_s=600.0,
        max_series=10,
        clock=time.time,
    )
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            for _ in range(5):
                store.add(
                    Observation(SeriesKey("ep1"), at=time.time(), failed=False, exec_ms=exec_ms[0])
                )
            store.flush()
            stop.wait(0.25)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _summary():
    sys.path.insert(0, str(Path(__file__).parents[3] / "libs/common/tests"))
    import summary_examples

    return summary_examples.load_summary(total_p95=9000.0)


def names(rec) -> list[tuple[str, str]]:
    return [(b["alerts"][0]["labels"]["alertname"], b["status"]) for b in rec.bodies()]


def test_worker_and_beat_evaluate_deliver_and_handle_bus_events(tmp_path: Path) -> None:
    """Beat's evaluations on the alerter queue fire and resolve the exec alert, deliveries on
    notify reach the webhook; a failing probe run is notified and a release announced."""
    from podpulse.common.testing import redis_server

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with redis_server() as redis_url, recorder() as hook:
        client = redis.Redis.from_url(redis_url)
        env = os.environ | {
            "REDIS_URL": redis_url,
            "ALERT_RULES_FILE": str(rules),
            "ALERT_WEBHOOK_URL": hook.url,
            "OTEL_SDK_DISABLED": "true",
            # Every process of one alerter must agree on the buckets.
            "PODPULSE_LOG_FORMAT": "json",
            "ALERTER_BUCKET_S": "1",
        }
        env.pop("SLACK_WEBHOOK_URL", None)
        worker_args = (
            "worker",
            "-Q",
            "alerter,notify",
            "-P",
            "solo",
            "-n",
            "alerter@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        )
        exec_ms = [900.0]
        with (
            alerter(*worker_args, env=env, log=tmp_path / "worker.log"),
            alerter("beat", "-l", "INFO", env=env, log=tmp_path / "beat.log"),
        ):
            # Its own redbeat lock: the prober's beat holds podpulse:redbeat::lock.
            wait_until(lambda: client.exists("podpulse:redbeat:alerter::lock"), 30, "beat lock")
            bus = create_celery_app("prober", CommonSettings(redis_url=redis_url))
            with feeding(client, exec_ms):
                wait_until(lambda: ("ExecP95High", "firing") in names(hook), 60, "firing")
                publish(bus, ProbeRunCompleted.of(_summary(), results_path="results/r1"))
                publish(
                    bus,
                    ReleaseRecorded(
                        tag="v1.0-production",
                        commit="abcdef1234",
                        endpoint_id="ep1",
                        image="img",
                        model="m",
                        gpu="g",
                        recorded_at=datetime.now(UTC),
                    ),
                )
                wait_until(lambda: len(hook.bodies()) >= 3, 30, "both events")
                exec_ms[0] = 20.0  # the handler recovers
                wait_until(lambda: ("ExecP95High", "resolved") in names(hook), 60, "resolved")
    assert sorted(names(hook)) == [
        ("ExecP95High", "firing"),
        ("ExecP95High", "resolved"),
        ("ProbeRunFailedSlo", "firing"),
        ("ReleaseRecorded", "resolved"),
    ]
    assert len(set(hook.keys())) == 4
