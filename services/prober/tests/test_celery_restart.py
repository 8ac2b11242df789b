"""The Redis fault drill: Redis restarted under a running load on a real worker process."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import redis
from celery_helpers import events, poll, prober_env, send, worker

from podpulse.common.request_records import read_records
from podpulse.common.summary import read_summary
from podpulse.common.testing import RestartableRedis
from podpulse.prober import Target

pytestmark = pytest.mark.slow


def test_redis_restart_mid_run_loses_no_row(twin_target: Target, tmp_path: Path) -> None:
    """Redis stopped and started again while a load runs: every request is in requests.csv,
    before and after the outage, the summary is written and the event published, and the
    worker lives on to run the next probe (the fault drill; it prints fault-to-end times)."""
    with tempfile.TemporaryDirectory(prefix="podpulse-redis-") as workdir:
        server = RestartableRedis(Path(workdir), persist=False)  # comes back empty
        server.start()
        try:
            env = prober_env(server.url, twin_target, tmp_path / "results")
            folder = tmp_path / "results" / "load-restart-test"

            def csv_rows() -> int:
                return len(read_records(folder)) if folder.exists() else 0

            with worker(env, tmp_path / "w1.log", "w1") as w1:
                w1.wait_for("ready.")
                send(server.url, "podpulse.prober.load", "restart-test", runs=30,
                      concurrency=[1], input_overrides={"exec_ms": 150})  # fmt: skip
                poll(lambda: csv_rows() >= 5, 30, "rows before the outage")
                stopped_at = time.time()
                server.stop()
                # Down until the worker has noticed, so the outage is one it lived through.
                poll(lambda: "Connection to broker lost" in w1.text(), 30, "the worker to notice")
                server.start()
                restarted_at = time.time()
                poll((folder / "summary.json").exists, 60, "the run to finish")
                ended_at = time.time()
                client = redis.Redis.from_url(server.url)
                (event,) = poll(lambda: events(client), 30, "the event after the restart")
                published_at = time.time()
                # The worker survived the outage: it takes and runs the next probe.
                send(server.url, "podpulse.prober.smoke", "after-restart")
                poll(lambda: len(events(client)) == 2, 60, "the next probe's event")
                assert w1.popen.poll() is None
                client.close()
        finally:
            server.close()
    print(  # noqa: T201 - the drill's figures, for the report
        f"drill redis-restart: outage {restarted_at - stopped_at:.2f} s, fault to run end "
        f"{ended_at - stopped_at:.2f} s, fault to event {published_at - stopped_at:.2f} s"
    )
    records = read_records(folder)
    assert sorted(r.seq for r in records) == list(range(30))
    assert any(r.done < stopped_at for r in records)
    assert any(r.done > restarted_at for r in records)
    summary = read_summary(folder / "summary.json")
    assert summary.level.requests == 30
    assert summary.interrupted is False
    assert event.run_id == "load-restart-test"
    assert event.summary == summary
