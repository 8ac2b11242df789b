"""The prober's scheduled and redelivered tasks on real processes: `python -m podpulse.prober
worker|beat` (redbeat) subprocesses, a real redis-server, and the twin with real runpod SDK
workers."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from celery_helpers import beat, events, poll, send, subscriber, worker

from podpulse.common.events import ProbeRunCompleted, parse_event
from podpulse.common.request_records import read_records
from podpulse.common.summary import read_summary

pytestmark = pytest.mark.slow


def test_scheduled_smoke_runs_on_real_beat_and_worker(
    redis_url: str, empty_redis: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """Beat fires the smoke schedule, a worker runs it against the twin, writes its results
    and publishes ProbeRunCompleted, which the alerter's subscriber task receives."""
    env = app_env | {"PROBER_SMOKE_EVERY_S": "2", "PROBER_SMOKE_RUNS": "3"}
    with ExitStack() as stack:
        inbox = stack.enter_context(subscriber(redis_url))
        stack.enter_context(worker(env, tmp_path / "worker.log", "w1")).wait_for("ready.")
        stack.enter_context(beat(env, tmp_path / "beat.log"))
        with inbox.changed:
            assert inbox.changed.wait_for(lambda: inbox.payloads, timeout=60), "no event"
            payload = inbox.payloads[0]
    event = parse_event(payload)
    assert isinstance(event, ProbeRunCompleted)
    assert (event.kind, event.target_kind, event.endpoint_id, event.slo_passed) == (
        "smoke",
        "hosted",
        app_env["RUNPOD_ENDPOINT_ID"],
        True,
    )
    assert event.run_id.startswith("smoke-")
    folder = Path(event.results_path)
    assert folder == tmp_path / "results" / event.run_id
    assert read_summary(folder / "summary.json") == event.summary
    assert event.summary.level.requests == event.summary.level.ok == 3
    assert event.summary.target.base_url == app_env["RUNPOD_ENDPOINT_BASE_URL"]
    assert len(read_records(folder)) == 3


def test_two_beats_fire_the_schedule_once_per_interval(
    empty_redis: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """Two beats on one Redis: one holds the redbeat lock and sends every smoke; the other,
    still running, sends none, so the queue holds one smoke per tick, not two."""
    env = app_env | {"PROBER_SMOKE_EVERY_S": "1"}
    sent = "Sending due task podpulse.prober.smoke"
    with (
        beat(env, tmp_path / "beat-a.log") as first,
        beat(env, tmp_path / "beat-b.log") as second,
    ):
        # Beat logs "Sending due task" before the message reaches Redis: wait for both.
        poll(
            lambda: (
                max(p.text().count(sent) for p in (first, second)) >= 5
                and empty_redis.llen("prober") >= 5
            ),
            60,
            "5 ticks, queued",
        )
        assert first.popen.poll() is None
        assert second.popen.poll() is None
        counts = sorted(p.text().count(sent) for p in (first, second))
        queued = empty_redis.llen("prober")
        holders = [p for p in (first, second) if "Acquired lock" in p.text()]
    assert counts[0] == 0, counts  # the beat without the lock never fired
    assert queued >= 5
    assert queued <= counts[1] + 1  # one message per tick (a tick may land between reads)
    assert len(holders) == 1


def test_redelivered_soak_runs_once(
    empty_redis: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """A 6 s soak under a 2 s visibility timeout is delivered again to a second worker, which
    skips it: the soak runs once, writes one folder and publishes one event."""
    env = app_env | {"PODPULSE_VISIBILITY_TIMEOUT_S": "2"}
    with (
        worker(env, tmp_path / "w1.log", "w1") as w1,
        worker(env, tmp_path / "w2.log", "w2") as w2,
    ):
        w1.wait_for("ready.")
        w2.wait_for("ready.")
        send(env["REDIS_URL"], "podpulse.prober.soak", "redelivery-test", duration_s=6,
              window_s=2, concurrency=[1], input_overrides={"exec_ms": 150})  # fmt: skip
        poll(lambda: events(empty_redis), 60, "the soak's event")

        def logs() -> str:
            return w1.text() + w2.text()

        poll(lambda: "probe_run_skipped" in logs(), 20, "a redelivered copy to be skipped")
    published = events(empty_redis)
    assert [e.run_id for e in published] == ["soak-redelivery-test"]
    assert logs().count('"probe_run_completed"') == 1
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["soak-redelivery-test"]
    records = read_records(tmp_path / "results" / "soak-redelivery-test")
    assert len({r.seq for r in records}) == len(records) >= 20
