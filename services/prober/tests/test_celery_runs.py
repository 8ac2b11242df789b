"""The prober's tasks on real processes: `python -m podpulse.prober worker|beat` (redbeat)
subprocesses, a real redis-server, and the twin with real runpod SDK workers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import task_failure

from podpulse.common.bus import create_celery_app
from podpulse.common.events import ProbeRunCompleted, parse_event
from podpulse.common.histogram import percentile
from podpulse.common.request_records import read_records
from podpulse.common.settings import CommonSettings
from podpulse.common.summary import read_summary
from podpulse.common.testing import free_port, redis_server, stop_process
from podpulse.prober import EmbeddedTwin, ProberSettings, Target, TargetError
from podpulse.prober._run_stats import RunStats
from podpulse.prober.app import create_app
from podpulse.twin import CalibratedSettings, TwinSettings

pytestmark = pytest.mark.slow


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """A celery subprocess and its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, needle: str, timeout_s: float = 30.0) -> None:
        _wait(lambda: needle in self.text(), timeout_s, f"{needle!r} in {self.log.name}")


@contextmanager
def celery(*args: str, env: dict[str, str], log: Path) -> Iterator[Proc]:
    """`python -m podpulse.prober <args>`; SIGTERM (warm shutdown) when the block ends."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "podpulse.prober", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
        )  # fmt: skip
    proc = Proc(popen, log)
    try:
        yield proc
    finally:
        stop_process(popen, timeout_s=15)


def worker(env: dict[str, str], log: Path, name: str) -> AbstractContextManager[Proc]:
    return celery(
        "worker", "-Q", "prober", "-c", "1", "-P", "prefork", "-n", f"{name}@%h", "-l", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat", env=env, log=log,
    )  # fmt: skip


def beat(env: dict[str, str], log: Path) -> AbstractContextManager[Proc]:
    return celery("beat", "-l", "INFO", env=env, log=log)


def _wait(check: Callable[[], object], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return result


def _env(redis_url: str, target: Target, results: Path, **extra: str) -> dict[str, str]:
    key = target.api_key if isinstance(target.api_key, str) else target.api_key()
    return (
        os.environ
        | {
            "REDIS_URL": redis_url,
            "RUNPOD_ENDPOINT_ID": target.endpoint_id,
            "RUNPOD_ENDPOINT_BASE_URL": target.base_url,
            "RUNPOD_API_KEY": key,
            "PROBER_RESULTS_DIR": str(results),
            "PROBER_WARMUP": "0",
            "PROBER_TIMEOUT_S": "30",
            "PROBER_SMOKE_EVERY_S": "3600",
            "OTEL_SDK_DISABLED": "true",
            "PODPULSE_LOG_FORMAT": "json",
            "PODPULSE_LOG_LEVEL": "INFO",
        }
        | extra
    )


def _send(redis_url: str, name: str, task_id: str, **kwargs: Any) -> None:
    """Send a prober task by name, as the CLI or another service would."""
    sender = create_celery_app("prober", CommonSettings(redis_url=redis_url))
    with sender.connection_for_write() as conn:
        sender.send_task(name, kwargs=kwargs, task_id=task_id, connection=conn)


def _events(client: redis.Redis, queue: str = "alerter") -> list[ProbeRunCompleted]:
    """ProbeRunCompleted events waiting on *queue* (nothing consumes it in these tests)."""
    events = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        event = parse_event(args[0])
        assert isinstance(event, ProbeRunCompleted)
        events.append(event)
    return events


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()  # each test starts with empty queues, no redbeat lock and no run claims
    yield conn
    conn.close()


@pytest.fixture
def app_env(redis_url: str, twin_target: Target, tmp_path: Path) -> dict[str, str]:
    return _env(redis_url, twin_target, tmp_path / "results")


@dataclass
class _Inbox:
    payloads: list[dict[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


@contextmanager
def subscriber(redis_url: str) -> Iterator[_Inbox]:
    """A real worker (in a thread) consuming the alerter queue as its probe-run subscriber."""
    app = create_celery_app("alerter", CommonSettings(redis_url=redis_url))
    inbox = _Inbox()

    @app.task(name="podpulse.alerter.on_probe_run", shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
    def on_probe_run(payload: dict[str, Any]) -> None:
        with inbox.changed:
            inbox.payloads.append(payload)
            inbox.changed.notify_all()

    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["alerter"], shutdown_timeout=10
    ):
        yield inbox


# --- tests ----------------------------------------------------------------------------------


def test_scheduled_smoke_runs_on_real_beat_and_worker(
    redis_url: str, client: redis.Redis, app_env: dict[str, str], tmp_path: Path
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
    client: redis.Redis, app_env: dict[str, str], tmp_path: Path
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
        _wait(
            lambda: (
                max(p.text().count(sent) for p in (first, second)) >= 5
                and client.llen("prober") >= 5
            ),
            60,
            "5 ticks, queued",
        )
        assert first.popen.poll() is None
        assert second.popen.poll() is None
        counts = sorted(p.text().count(sent) for p in (first, second))
        queued = client.llen("prober")
        holders = [p for p in (first, second) if "Acquired lock" in p.text()]
    assert counts[0] == 0, counts  # the beat without the lock never fired
    assert queued >= 5
    assert queued <= counts[1] + 1  # one message per tick (a tick may land between reads)
    assert len(holders) == 1


def test_redelivered_soak_runs_once(
    client: redis.Redis, app_env: dict[str, str], tmp_path: Path
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
        _send(env["REDIS_URL"], "podpulse.prober.soak", "redelivery-test", duration_s=6,
              window_s=2, concurrency=[1], input_overrides={"exec_ms": 150})  # fmt: skip
        _wait(lambda: _events(client), 60, "the soak's event")

        def logs() -> str:
            return w1.text() + w2.text()

        _wait(lambda: "probe_run_skipped" in logs(), 20, "a redelivered copy to be skipped")
    events = _events(client)
    assert [e.run_id for e in events] == ["soak-redelivery-test"]
    assert logs().count('"probe_run_completed"') == 1
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["soak-redelivery-test"]
    records = read_records(tmp_path / "results" / "soak-redelivery-test")
    assert len({r.seq for r in records}) == len(records) >= 20


def test_sharded_load_is_merged_exactly(
    client: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """A load split over two workers writes one summary whose percentiles are those of every
    request of both shards."""
    with (
        worker(app_env, tmp_path / "w1.log", "w1") as w1,
        worker(app_env, tmp_path / "w2.log", "w2") as w2,
    ):
        w1.wait_for("ready.")
        w2.wait_for("ready.")
        _send(app_env["REDIS_URL"], "podpulse.prober.load_sharded", "sharded-test", shards=2,
              lead_s=1.5, runs=24, concurrency=[4], input_overrides={"exec_ms": 60})  # fmt: skip
        (event,) = _wait(lambda: _events(client), 60, "the merged run's event")
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
    client: redis.Redis, app_env: dict[str, str], tmp_path: Path
) -> None:
    """Shard 1 of 2 raises (its prompt set is gone): it posts a failure marker, the merge runs
    on shard 0's requests, and the summary and the event say the run is incomplete."""
    spec = {"kind": "load", "run_id": "load-shard-fails", "runs": 4, "concurrency": [2],
            "warmup": 0, "input_overrides": {"exec_ms": 30}}  # fmt: skip
    with worker(app_env, tmp_path / "w1.log", "w1") as w1:
        w1.wait_for("ready.")
        _send(app_env["REDIS_URL"], "podpulse.prober.load_shard", "fails.shard0",
              spec=spec, shard=0, shards=2)  # fmt: skip
        _send(app_env["REDIS_URL"], "podpulse.prober.load_shard", "fails.shard1",
              spec=spec | {"prompts": str(tmp_path / "gone.jsonl")}, shard=1, shards=2)  # fmt: skip
        (event,) = _wait(lambda: _events(client), 30, "the incomplete run's event")
        assert '"probe_run_shards_failed"' in w1.text()
    summary = read_summary(tmp_path / "results" / "load-shard-fails" / "summary.json")
    assert summary == event.summary
    assert (summary.interrupted, summary.passed, event.slo_passed) == (True, False, False)
    assert summary.level.requests == 2  # shard 0's share
    assert summary.shards is not None
    assert summary.shards.missing == (1,)
    assert "PromptSetError" in summary.shards.failed[1]


# --- Redis restarted mid-run ----------------------------------------------------------------


class _RestartableRedis:
    """A redis-server on a fixed port that can be stopped and started again (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        _wait(lambda: _pings(probe), 10, "redis-server to answer")
        probe.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_restart_mid_run_loses_no_row(twin_target: Target, tmp_path: Path) -> None:
    """Redis stopped and started again while a load runs: every request is in requests.csv,
    before and after the outage, the summary is written and the event published, and the
    worker lives on to run the next probe (the fault drill; it prints fault-to-end times)."""
    with tempfile.TemporaryDirectory(prefix="podpulse-redis-") as workdir:
        server = _RestartableRedis(Path(workdir))
        server.start()
        try:
            env = _env(server.url, twin_target, tmp_path / "results")
            folder = tmp_path / "results" / "load-restart-test"

            def csv_rows() -> int:
                return len(read_records(folder)) if folder.exists() else 0

            with worker(env, tmp_path / "w1.log", "w1") as w1:
                w1.wait_for("ready.")
                _send(server.url, "podpulse.prober.load", "restart-test", runs=30,
                      concurrency=[1], input_overrides={"exec_ms": 150})  # fmt: skip
                _wait(lambda: csv_rows() >= 5, 30, "rows before the outage")
                stopped_at = time.time()
                server.stop()
                # Down until the worker has noticed, so the outage is one it lived through.
                _wait(lambda: "Connection to broker lost" in w1.text(), 30, "the worker to notice")
                server.start()
                restarted_at = time.time()
                _wait((folder / "summary.json").exists, 60, "the run to finish")
                ended_at = time.time()
                client = redis.Redis.from_url(server.url)
                (event,) = _wait(lambda: _events(client), 30, "the event after the restart")
                published_at = time.time()
                # The worker survived the outage: it takes and runs the next probe.
                _send(server.url, "podpulse.prober.smoke", "after-restart")
                _wait(lambda: len(_events(client)) == 2, 60, "the next probe's event")
                assert w1.popen.poll() is None
                client.close()
        finally:
            server.stop()
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


# --- no target, no verdict ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "kwargs", "endpoint_id", "missing"),
    [
        ("podpulse.prober.smoke", {}, None, "RUNPOD_ENDPOINT_ID"),
        ("podpulse.prober.smoke", {}, "ep-configured", "RUNPOD_API_KEY"),
        ("podpulse.prober.load_sharded", {"shards": 2}, None, "RUNPOD_ENDPOINT_ID"),
    ],
)
def test_a_task_without_its_hosted_target_fails_and_publishes_nothing(  # noqa: PLR0917
    redis_url: str,
    client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    kwargs: dict[str, Any],
    endpoint_id: str | None,
    missing: str,
) -> None:
    """PROBER_TARGET=hosted without an endpoint id or a key: a real worker's task fails naming
    what is missing, starts no twin, writes no results and publishes no event."""
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY_FILE", raising=False)
    results = tmp_path / "results"
    app = create_app(
        CommonSettings(redis_url=redis_url, runpod_endpoint_id=endpoint_id),
        ProberSettings(target="hosted", results_dir=results),
    )
    failures: list[BaseException] = []

    def on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        if exception is not None and sender is not None and sender.app is app:
            failures.append(exception)

    task_failure.connect(on_failure, weak=False)
    try:
        with start_worker(
            app, pool="solo", perform_ping_check=False, queues=["prober"], shutdown_timeout=10
        ):
            app.send_task(task, kwargs=kwargs, task_id=f"no-target-{time.time_ns()}")
            _wait(lambda: failures, 30, "the task to fail")
    finally:
        task_failure.disconnect(on_failure)
    (error,) = failures
    assert isinstance(error, TargetError)
    assert missing in str(error)
    assert client.llen("alerter") == client.llen("tagger") == 0
    assert client.llen("prober") == 0  # a sharded run sent no shards either
    assert not results.exists()


def test_a_twin_target_task_probes_an_embedded_twin_and_says_so(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """PROBER_TARGET=twin: a real worker's smoke starts its own twin, and the summary and the
    event both name the twin as the target."""
    app = create_app(
        CommonSettings(redis_url=redis_url, runpod_endpoint_id=None),
        ProberSettings(target="twin", results_dir=tmp_path / "results", smoke_runs=2, warmup=0),
        EmbeddedTwin(
            TwinSettings(workers_min=1, workers_max=1, worker_concurrency=4, stop_grace_s=0.3),
            CalibratedSettings(exec_ms=30, distribution="fixed"),
        ),
    )
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["prober"], shutdown_timeout=10
    ):
        app.send_task("podpulse.prober.smoke", task_id="twin-target")
        (event,) = _wait(lambda: _events(client), 60, "the smoke's event")
    assert (event.run_id, event.target_kind, event.slo_passed) == (
        "smoke-twin-target",
        "twin",
        True,
    )
    summary = read_summary(Path(event.results_path) / "summary.json")
    assert summary == event.summary
    assert summary.target.kind == "twin"
    assert summary.target.endpoint_id == event.endpoint_id
    assert summary.level.requests == 2
