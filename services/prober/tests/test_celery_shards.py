"""A sharded load on real worker processes: the merge of every shard's requests, and a run
with a failed shard that still reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from celery_helpers import events, poll, send, worker

from podpulse.common.histogram import percentile
from podpulse.common.request_records import read_records
from podpulse.common.summary import read_summary
from podpulse.prober._run_stats import RunStats

pytestmark = pytest.mark.slow


def test_sharded_load_is_merged_exactly(
    empty_redis: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """A load split over two workers writes one summary whose percentiles are those of every
    request of both shards."""
    with (
        worker(app_env, tmp_path / "w1.log", "w1") as w1,
        worker(app_env, tmp_path / "w2.log", "w2") as w2,
    ):
        w1.wait_for("ready.")
        w2.wait_for("ready.")
        send(app_env["REDIS_URL"], "podpulse.prober.load_sharded", "sharded-test", shards=2,
              lead_s=1.5, runs=24, concurrency=[4], input_overrides={"exec_ms": 60})  # fmt: skip
        (event,) = poll(lambda: events(empty_redis), 60, "the merged run's event")
        shard_runs = [p.text().count("podpulse.prober.load_shard[") for p in (w1, w2)]
    folder = tmp_path / "results" / "load-sharded-test"
    records = read_records(folder)
    assert sorted((r.shard, r.seq % 2) for r in records) == sorted([(0, 0)] * 12 + [(1, 1)] * 12)
    assert min(shard_runs) >= 1  # each worker ran a shard
    summary = read_summary(folder / "summary.json")
    assert summary == event.summary
    assert (summary.level.requests, summary.shards, summary.passed) == (24, None, True)
    whole = RunStats.from_records(records)
    assert summary.level.latency_ms.total == whole.latency("total")
    p95 = percentile([r.total_ms for r in records if r.ok], 95)
    assert summary.level.latency_ms.total.p95 == pytest.approx(p95, abs=0.06)


def test_a_sharded_run_with_a_failed_shard_still_reports(
    empty_redis: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """Shard 1 of 2 raises (its prompt set is gone): it posts a failure marker, the merge runs
    on shard 0's requests, and the summary and the event say the run is incomplete."""
    spec = {"kind": "load", "run_id": "load-shard-fails", "runs": 4, "concurrency": [2],
            "warmup": 0, "input_overrides": {"exec_ms": 30}}  # fmt: skip
    with worker(app_env, tmp_path / "w1.log", "w1") as w1:
        w1.wait_for("ready.")
        send(app_env["REDIS_URL"], "podpulse.prober.load_shard", "fails.shard0",
              spec=spec, shard=0, shards=2)  # fmt: skip
        send(app_env["REDIS_URL"], "podpulse.prober.load_shard", "fails.shard1",
              spec=spec | {"prompts": str(tmp_path / "gone.jsonl")}, shard=1, shards=2)  # fmt: skip
        (event,) = poll(lambda: events(empty_redis), 30, "the incomplete run's event")
        assert '"probe_run_shards_failed"' in w1.text()
    summary = read_summary(tmp_path / "results" / "load-shard-fails" / "summary.json")
    assert summary == event.summary
    assert (summary.interrupted, summary.passed, event.slo_passed) == (True, False, False)
    assert summary.level.requests == 2  # shard 0's share
    assert summary.shards is not None
    assert summary.shards.missing == (1,)
    assert "PromptSetError" in summary.shards.failed[1]
