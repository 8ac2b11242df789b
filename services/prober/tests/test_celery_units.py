"""The prober's bus pieces without a worker: schedule, exact shard merging, run claims on a real
Redis, the bounded event publish, and the app's configuration."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from podpulse.common.bus import create_celery_app, queue_for_task
from podpulse.common.histogram import percentile
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.retry import Retry
from podpulse.common.settings import CommonSettings
from podpulse.common.summary import TargetInfo
from podpulse.common.testing import free_port, redis_server
from podpulse.prober import EmbeddedTwin, ProberSettings, RunStats, summarize
from podpulse.prober.__main__ import main as prober_main
from podpulse.prober._celery_run import publish_completed
from podpulse.prober._celery_shards import ShardBoard
from podpulse.prober._context import BUS_ERRORS, context_of
from podpulse.prober._locks import KEY_PREFIX, LeaseLostError, claim_run, while_held
from podpulse.prober._schedule import (
    SMOKE_ENTRY,
    SOAK_ENTRY,
    SWEEP_ENTRY,
    beat_schedule,
    parse_cron,
)
from podpulse.prober._shards import merge_shards, stats_from_json, stats_to_json
from podpulse.prober.app import create_app
from podpulse.prober.tasks import TASK_NAMES
from podpulse.twin import CalibratedSettings, TwinSettings


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with redis_server() as url:
        conn = redis.Redis.from_url(url)
        yield conn
        conn.close()


def _record(seq: int, total_ms: float, shard: int = 0) -> RequestRecord:
    start = 1_700_000_000.0 + seq
    return RequestRecord(
        run_id="r", seq=seq, concurrency=4, intended=start, sent=start,
        done=start + total_ms / 1000, outcome=Outcome.OK, delay_ms=1.0,
        exec_ms=total_ms / 2, shard=shard,
    )  # fmt: skip


def _wait(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- schedule -------------------------------------------------------------------------------


def test_beat_schedule_comes_from_settings() -> None:
    """Smoke every smoke_every_s (expiring after one period), sweep on the settings' cron."""
    entries = beat_schedule(smoke_every_s=900, sweep_cron="0 3 * * *")
    smoke, sweep = entries[SMOKE_ENTRY], entries[SWEEP_ENTRY]
    assert smoke["task"] == "podpulse.prober.smoke"
    assert smoke["schedule"].run_every == timedelta(seconds=900)
    assert smoke["options"] == {"expires": 900.0}
    assert sweep["task"] == "podpulse.prober.sweep"
    assert (sweep["schedule"].hour, sweep["schedule"].minute) == ({3}, {0})
    assert all(queue_for_task(entry["task"]) == "prober" for entry in entries.values())
    assert beat_schedule(smoke_every_s=None, sweep_cron=None) == {}
    assert SOAK_ENTRY not in entries
    nightly = beat_schedule(smoke_every_s=None, sweep_cron=None, soak_cron="30 2 * * *")
    assert nightly[SOAK_ENTRY]["task"] == "podpulse.prober.soak"
    assert (nightly[SOAK_ENTRY]["schedule"].hour, nightly[SOAK_ENTRY]["schedule"].minute) == (
        {2},
        {30},
    )


def test_first_smoke_can_come_before_one_period() -> None:
    """smoke_first_after_s makes a new redbeat entry due that long after the beat's start,
    then every period; without it the first smoke waits one period."""
    from redbeat.schedulers import RedBeatSchedulerEntry

    app = create_app(CommonSettings(), ProberSettings())
    start = datetime.now(UTC)
    entries = beat_schedule(smoke_every_s=60, sweep_cron=None, smoke_first_after_s=15, now=start)
    entry = RedBeatSchedulerEntry(name=SMOKE_ENTRY, app=app, **entries[SMOKE_ENTRY])
    # What beat asks on every tick (redbeat's sorted-set score is only a hint).
    due, next_check_s = entry.is_due()
    assert not due
    assert 13 < next_check_s <= 15
    assert entry.schedule.run_every == timedelta(seconds=60)
    plain = beat_schedule(smoke_every_s=60, sweep_cron=None, now=start)
    assert "last_run_at" not in plain[SMOKE_ENTRY]


@pytest.mark.parametrize("expression", ["0 3 * *", "61 * * * *", "0 3 * * * *"])
def test_bad_cron_names_the_expression(expression: str) -> None:
    """A cron with the wrong field count or an out-of-range field fails, quoting itself."""
    with pytest.raises(ValueError, match=r"cron expression '.*'"):
        parse_cron(expression)


def test_the_app_factory_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read from PROBER_* and the common variables make the app: the schedule, every
    task, and long tasks kept running through a broker reconnect."""
    for name, value in {"PROBER_SMOKE_EVERY_S": "120", "PROBER_SWEEP_CRON": "30 2 * * *",
                        "PODPULSE_VISIBILITY_TIMEOUT_S": "4"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    app = create_app(CommonSettings(), ProberSettings())
    conf = app.conf
    assert sorted(t for t in app.tasks if t.startswith("podpulse.")) == sorted(TASK_NAMES)
    assert str(conf.beat_schedule[SMOKE_ENTRY]["schedule"]) == "<freq: 2.00 minutes>"
    assert str(conf.beat_schedule[SWEEP_ENTRY]["schedule"]) == (
        "<crontab: 30 2 * * * (m/h/dM/MY/d)>"
    )
    assert conf.broker_transport_options == {
        "visibility_timeout": 4, "unacked_restore_interval": 2, "unacked_restore_throttle": 1,
    }  # fmt: skip
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert (conf.task_acks_late, conf.result_backend) == (True, None)
    assert context_of(app).settings.smoke_every_s == 120


def test_apps_carry_their_own_settings() -> None:
    """Two apps built with different settings each hand their tasks their own; importing the
    app module builds none, and an app the factory did not build has no context."""
    import podpulse.prober.app as module

    assert not hasattr(module, "app")
    assert not hasattr(module, "settings")
    twin = EmbeddedTwin(TwinSettings(), CalibratedSettings())
    a = create_app(
        CommonSettings(redis_url="redis://127.0.0.1:1/0"), ProberSettings(target="twin"), twin
    )
    b = create_app(CommonSettings(redis_url="redis://127.0.0.1:2/0"), ProberSettings())
    assert (context_of(a).settings.target, context_of(b).settings.target) == ("twin", "hosted")
    assert context_of(a).redis is not context_of(b).redis
    assert a.tasks["podpulse.prober.smoke"].app is a
    with pytest.raises(TypeError, match="create_app"):
        context_of(create_celery_app("prober", CommonSettings()))
    with pytest.raises(ValueError, match="PROBER_TARGET=twin needs the twin's settings"):
        create_app(CommonSettings(), ProberSettings(target="twin"))


def test_the_entry_point_refuses_bad_settings_without_printing_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m podpulse.prober with a bad PROBER_TARGET exits 2 naming it; a bad REDIS_URL's
    value (it can hold a password) is never printed."""
    monkeypatch.setenv("PROBER_TARGET", "staging")
    monkeypatch.setenv("REDIS_URL", "http://user:hunter2@example")
    assert prober_main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "PROBER_TARGET" in err
    assert "REDIS_URL" in err
    assert "hunter2" not in err


def test_the_entry_point_refuses_bad_twin_settings_for_the_twin_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """PROBER_TARGET=twin with a bad TWIN_PORT exits 2 naming it, without its value or a
    traceback; the same variable does not concern a hosted prober."""
    monkeypatch.setenv("PROBER_TARGET", "twin")
    monkeypatch.setenv("TWIN_PORT", "port-hunter2")
    assert prober_main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "TWIN_PORT" in err
    assert "hunter2" not in err
    assert "Traceback" not in err


# --- exact merging --------------------------------------------------------------------------


def test_merged_shards_report_the_percentiles_of_all_requests() -> None:
    """Merging shards gives the nearest-rank P50/P95/P99 over every request; averaging the
    shards' P95s would not."""
    rng = random.Random(7)
    fast = [_record(i, rng.uniform(900, 1100), shard=0) for i in range(0, 300, 2)]
    slow = [_record(i, rng.uniform(900, 1100) + (4000 if i % 10 == 1 else 0), shard=1)
            for i in range(1, 300, 2)]  # fmt: skip
    parts = {0: {4: RunStats.from_records(fast)}, 1: {4: RunStats.from_records(slow)}}
    merged = merge_shards(parts, 2)[4]
    totals = [r.total_ms for r in fast + slow]
    for q in (50, 95, 99):
        assert merged.hist["total"].percentile(q) == pytest.approx(percentile(totals, q), abs=0.05)
    assert merged == RunStats.from_records(fast + slow)
    averaged = sum(p[4].hist["total"].percentile(95) or 0 for p in parts.values()) / 2
    assert abs(averaged - (merged.hist["total"].percentile(95) or 0)) > 1000


@settings(max_examples=40, deadline=None)
@given(
    totals=st.lists(st.floats(0, 60_000, allow_nan=False), min_size=1, max_size=80),
    shards=st.integers(1, 5),
    q=st.sampled_from([50, 90, 95, 99, 100]),
)
def test_merge_is_exact_for_any_split(totals: list[float], shards: int, q: int) -> None:
    """For any latencies dealt to any number of shards, the merge's percentile is the
    percentile over all of them (to the histogram's 0.1 ms) and survives JSON."""
    parts = {
        shard: {1: RunStats.from_records(
            _record(i, total) for i, total in enumerate(totals) if i % shards == shard
        )}
        for shard in range(shards)
    }  # fmt: skip
    via_json = {shard: stats_from_json(json.loads(json.dumps(stats_to_json(part))))
                for shard, part in parts.items()}  # fmt: skip
    merged = merge_shards(via_json, shards)[1]
    expected = percentile(totals, q)
    assert expected is not None
    assert merged.hist["total"].percentile(q) == pytest.approx(expected, abs=0.05 + 1e-6)
    assert merged.requests == len(totals)


def test_merge_refuses_an_incomplete_run() -> None:
    """A merge missing a shard (or with a stranger) fails rather than report part of a run."""
    part = {1: RunStats.from_records([_record(0, 10.0)])}
    with pytest.raises(ValueError, match=r"missing \[1\], unexpected \[\]"):
        merge_shards({0: part}, 2)
    with pytest.raises(ValueError, match=r"unexpected \[2\]"):
        merge_shards({0: part, 1: part, 2: part}, 2)


def test_shard_board_completes_once(client: redis.Redis) -> None:
    """Only the post that completes the set says so; a re-posted shard neither overwrites its
    first statistics nor completes the set again."""
    board = ShardBoard(client, f"board-{time.time_ns()}")
    first = {1: RunStats.from_records([_record(0, 10.0)])}
    second = {1: RunStats.from_records([_record(1, 20.0)])}
    assert board.post(0, first, 2) is False
    assert board.post(1, second, 2) is True
    assert board.post(1, first, 2) is False
    assert board.collect() == {0: first, 1: second}
    assert 0 < client.ttl(board.key) <= 2 * 24 * 3600


def test_a_retried_post_that_completed_the_set_still_sends_the_merge(client: redis.Redis) -> None:
    """A post whose reply was lost is retried with its token: the retry (added=0) still learns
    it completed the set, and no other post does."""
    board = ShardBoard(client, f"board-{time.time_ns()}")
    stats = {1: RunStats.from_records([_record(0, 10.0)])}
    assert board.post(0, stats, 2, token="shard0") is False
    assert board.post(1, stats, 2, token="shard1") is True
    assert board.post(1, stats, 2, token="shard1") is True  # the retry of that same post
    assert board.post(0, stats, 2, token="shard0") is False
    assert board.post_failure(1, "late copy", 2, token="other") is False


def test_a_failed_shard_completes_the_set_and_is_named(client: redis.Redis) -> None:
    """A failure marker counts towards the set, so the merge is sent; it reads back apart."""
    board = ShardBoard(client, f"board-{time.time_ns()}")
    stats = {1: RunStats.from_records([_record(0, 10.0)])}
    assert board.post(0, stats, 2) is False
    assert board.post_failure(1, "PromptSetError: gone", 2) is True
    assert board.read() == ({0: stats}, {1: "PromptSetError: gone"})
    assert board.collect() == {0: stats}


def test_damaged_shard_statistics_fail_that_shard_naming_the_field(client: redis.Redis) -> None:
    """A board entry another process damaged (a field gone, a count negative, not JSON) fails
    its own shard with the reason, and the others still read back."""
    board = ShardBoard(client, f"board-{time.time_ns()}")
    stats = {1: RunStats.from_records([_record(0, 10.0)])}
    board.post(0, stats, 4)
    good = stats_to_json(stats)
    no_tokens = {"1": {k: v for k, v in good["1"].items() if k != "output_tokens"}}
    negative = {"1": good["1"] | {"rate_limited": -1}}
    client.hset(board.key, mapping={"1": json.dumps(no_tokens), "2": json.dumps(negative)})
    client.hset(board.key, "3", "{not json")
    posted, failed = board.read()
    assert posted == {0: stats}
    assert "output_tokens" in failed[1]
    assert "rate_limited" in failed[2]
    assert sorted(failed) == [1, 2, 3]
    assert all(reason.startswith("its statistics on the board are unreadable") for reason in
               failed.values())  # fmt: skip


def test_stats_json_round_trips_through_its_model() -> None:
    """stats_to_json output, windows included, validates and reads back into equal RunStats."""
    records = [_record(i, 10.0 + i) for i in range(5)]
    windowed = RunStats.from_records(records, window_s=1.0, origin=0.0)
    assert windowed.windows
    data = json.loads(json.dumps(stats_to_json({2: windowed})))
    assert stats_from_json(data) == {2: windowed}


# --- run claims -----------------------------------------------------------------------------


def test_a_run_id_is_claimed_once(client: redis.Redis) -> None:
    """While a run holds its claim a second one is refused as running; afterwards as done."""
    run_id = f"claim-{time.time_ns()}"
    with claim_run(client, run_id, ttl_s=30) as first:
        assert first.owned
        with claim_run(client, run_id, ttl_s=30) as second:
            assert (second.owned, second.state) == (False, "running")
    with claim_run(client, run_id, ttl_s=30) as third:
        assert (third.owned, third.state) == (False, "completed")
    assert client.get(f"{KEY_PREFIX}{run_id}:done") == b"ok"
    assert not client.exists(f"{KEY_PREFIX}{run_id}:lease")


def test_a_failed_run_is_not_run_again(client: redis.Redis) -> None:
    """A run that raised is remembered too: a redelivery would overwrite its partial results."""
    run_id = f"fail-{time.time_ns()}"
    with pytest.raises(RuntimeError), claim_run(client, run_id, ttl_s=30):
        raise RuntimeError("engine blew up")
    assert client.get(f"{KEY_PREFIX}{run_id}:done") == b"failed"
    with claim_run(client, run_id, ttl_s=30) as again:
        assert again.state == "completed"


def test_the_lease_is_renewed_and_retaken_while_the_run_goes_on(client: redis.Redis) -> None:
    """A run longer than its lease keeps it; a lease Redis lost (restart) is taken back, and
    one another holder took is reported lost, never stolen back."""
    run_id = f"renew-{time.time_ns()}"
    lease = f"{KEY_PREFIX}{run_id}:lease"
    with claim_run(client, run_id, ttl_s=0.6, renew_every_s=0.1) as claim:
        seen = {"renewals": 0, "pttl": client.pttl(lease)}

        def renewed_past_its_ttl() -> bool:
            pttl = client.pttl(lease)
            assert pttl > 0, "the lease expired while the run held it"
            seen["renewals"] += pttl > seen["pttl"]
            seen["pttl"] = pttl
            # Eight renewals 0.1 s apart outlast the 0.6 s TTL: only renewal kept the key.
            return seen["renewals"] >= 8

        _wait(renewed_past_its_ttl)
        assert client.get(lease) == claim.token.encode()
        client.delete(lease)
        _wait(lambda: client.get(lease) == claim.token.encode())
        client.set(lease, "someone-else")
        _wait(lambda: claim.lost)
        assert client.get(lease) == b"someone-else"
    assert client.get(lease) == b"someone-else"  # finishing leaves a foreign lease alone


def test_a_run_whose_lease_is_lost_stops(client: redis.Redis) -> None:
    """Another holder takes the lease mid-run: the run is cancelled and LeaseLostError raised;
    a run that keeps its lease returns its result."""
    run_id = f"lost-{time.time_ns()}"
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with claim_run(client, run_id, ttl_s=30, renew_every_s=0.05) as claim:
        assert asyncio.run(while_held(claim, asyncio.sleep(0.1, "ok"), check_s=0.02)) == "ok"
        client.set(f"{KEY_PREFIX}{run_id}:lease", "someone-else")
        # Had the loss gone unnoticed, work() would end normally after 30 s and no error rise.
        with pytest.raises(LeaseLostError, match=run_id):
            asyncio.run(while_held(claim, work(), check_s=0.02))
    assert cancelled.is_set()


def test_concurrent_claims_let_exactly_one_run(client: redis.Redis) -> None:
    """Eight threads racing for one run id: one runs, seven are skipped."""
    run_id = f"race-{time.time_ns()}"
    owned: list[bool] = []
    barrier = threading.Barrier(8)

    def contender() -> None:
        barrier.wait()
        with claim_run(client, run_id, ttl_s=30) as claim:
            owned.append(claim.owned)
            time.sleep(0.2)

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(owned) == [False] * 7 + [True]


# --- publishing -----------------------------------------------------------------------------


def test_publish_gives_up_after_its_bounded_retries(tmp_path: Path) -> None:
    """With no broker the event publish retries its few times, logs, and returns False."""
    dead = create_celery_app(
        "prober", CommonSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    )
    dead.conf.broker_connection_timeout = 0.2
    spec = ProbeSpec(kind="smoke", run_id="smoke-offline", runs=1, warmup=0)
    target = TargetInfo(kind="hosted", endpoint_id="ep", base_url="http://127.0.0.1:1/v2")
    stats = RunStats.from_records([_record(0, 10.0)])
    summary = summarize(spec, {1: stats}, ProberSettings(), target=target)
    retries: list[int] = []

    def wait(attempt: int, _: BaseException) -> float:
        retries.append(attempt)
        return 0.05

    sent = publish_completed(dead, summary, tmp_path, retry=Retry(BUS_ERRORS, 2, wait))
    assert sent is False
    assert retries == [0, 1]  # two retries after the first attempt, then it gives up
